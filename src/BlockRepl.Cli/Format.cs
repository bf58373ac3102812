namespace BlockRepl.Cli;

internal static class Format
{
    public static string Bytes(long b)
    {
        string[] units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
        double v = b;
        int u = 0;
        while (Math.Abs(v) >= 1024 && u < units.Length - 1) { v /= 1024; u++; }
        return u == 0 ? $"{b} B" : $"{v:0.0#} {units[u]}";
    }

    public static string Rate(long bytes, double seconds) =>
        seconds <= 0 ? "-" : $"{bytes / seconds / 1e6:0.#} MB/s";

    public static string Duration(double s) =>
        s < 60 ? $"{s:0.##} s" : s < 3600 ? $"{(int)(s / 60)}m{(int)(s % 60):00}s" : $"{(int)(s / 3600)}h{(int)(s % 3600 / 60):00}m";
}
