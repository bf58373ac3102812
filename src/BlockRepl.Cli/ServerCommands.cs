using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using BlockRepl.Engine;
using BlockRepl.Engine.Jobs;
using BlockRepl.Engine.Repository;
using BlockRepl.Engine.Servers;
using Serilog;

namespace BlockRepl.Cli;

/// <summary><c>blockrepl inventory</c> and <c>blockrepl fleet</c> (docs/servers.md).</summary>
internal static class ServerCommands
{
    /// <summary>A server whose newest record is older than this is shown DISCONNECTED, as AWS MGN does.</summary>
    public static readonly TimeSpan DisconnectedAfter = TimeSpan.FromMinutes(10);

    public const string Disconnected = "DISCONNECTED";

    private static Args Parse(string[] argv, string[] values, string command)
    {
        var a = Args.Parse(argv, new HashSet<string>(values.Append("--endpoint-url")), new HashSet<string> { "--json", "--verbose", "--no-progress" });
        if (a.Positionals.Count > 0) throw new UsageException($"{command} takes no arguments (got '{a.Positionals[0]}')");
        return a;
    }

    /// <summary>
    /// Prints this machine's inventory; with <c>--repo</c> also publishes a server record (state null) under the
    /// server id of <c>--state-dir</c>, and <c>--json</c> then prints that record.
    /// </summary>
    public static async Task<int> InventoryAsync(string[] argv, CancellationToken ct)
    {
        var a = Parse(argv, ["--repo", "--state-dir", "--name"], "inventory");
        string? location = a.Value("--repo");
        if (location is null && (a.Value("--state-dir") ?? a.Value("--endpoint-url") ?? a.Value("--name")) is not null)
            throw new UsageException("--state-dir, --name and --endpoint-url apply only with --repo (publishing a server record)");
        var inventory = ServerInventory.Collect();
        if (location is null)
        {
            if (a.Flag("--json")) WriteJson(JsonSerializer.SerializeToNode(inventory, ServerJsonContext.Default.ServerInventory)!);
            else PrintInventory(inventory);
            return ExitCodes.Ok;
        }

        string name = Name(a.Value("--name")) ?? inventory.HostName ?? Environment.MachineName;
        await using var repo = await RepositoryLocator.OpenAsync(location, loadIndex: false, ct, a.Value("--endpoint-url")).ConfigureAwait(false);
        var identity = ServerIdentity.LoadOrCreate(a.Value("--state-dir") ?? StateDirectory.Default);
        var record = new ServerRecord { ServerId = identity.Id, Name = name, Time = inventory.CollectedTime, Inventory = inventory };
        string key = await ServerRecords.PublishAsync(repo.Backend, record, ct).ConfigureAwait(false);
        if (a.Flag("--json"))
        {
            WriteJson(JsonSerializer.SerializeToNode(record, ServerJsonContext.Default.ServerRecord)!);
            return ExitCodes.Ok;
        }
        PrintInventory(inventory);
        Console.WriteLine();
        Console.WriteLine($"published server {name} ({identity.Id}{(identity.Created ? ", new" : "")}) as {key} in {repo.Location}");
        return ExitCodes.Ok;
    }

    /// <summary>Lists every server that publishes records into the repository: its newest record each.</summary>
    public static async Task<int> FleetAsync(string[] argv, CancellationToken ct)
    {
        var a = Parse(argv, ["--repo"], "fleet");
        string location = a.Required("--repo", "<dir|s3://…>: the repository the servers replicate into");
        await using var repo = await RepositoryLocator.OpenAsync(location, loadIndex: false, ct, a.Value("--endpoint-url")).ConfigureAwait(false);
        var records = await ServerRecords.ListLatestAsync(repo.Backend, ct,
            (key, e) => Log.Warning("skipping unreadable server record {Key}: {Message}", key, e.Message)).ConfigureAwait(false);
        var now = DateTimeOffset.UtcNow;
        if (a.Flag("--json"))
        {
            var array = new JsonArray();
            foreach (var r in records)
            {
                var node = JsonSerializer.SerializeToNode(r, ServerJsonContext.Default.ServerRecord)!.AsObject();
                node["fleetState"] = FleetState(r, now);
                node["lastSeenSeconds"] = Math.Round((now - r.Time).TotalSeconds, 3);
                array.Add(node);
            }
            WriteJson(array);
            return ExitCodes.Ok;
        }
        if (records.Count == 0)
        {
            Console.WriteLine($"no servers publish records in {repo.Location}");
            return ExitCodes.Ok;
        }
        Console.WriteLine($"{"NAME",-20}  {"ID",-18}  {"STATE",-13}  {"LAG",8}  {"LAST SEEN",9}  {"VOLUMES",7}  {"SIZE",10}  OS");
        foreach (var r in records)
        {
            long total = r.Volumes.Sum(v => v.SizeBytes);
            Console.WriteLine($"{r.Name,-20}  {r.ServerId,-18}  {FleetState(r, now) ?? "-",-13}  {Seconds(r.LagSeconds),8}  {Age(now - r.Time),9}  {r.Volumes.Count,7}  {Format.Bytes(total),10}  {r.Inventory?.Os ?? "-"}");
        }
        Console.WriteLine($"{records.Count} server(s)");
        return ExitCodes.Ok;
    }

    /// <summary>The state shown for a server: DISCONNECTED when it has not published for <see cref="DisconnectedAfter"/>, else its own (null when not replicating).</summary>
    internal static string? FleetState(ServerRecord r, DateTimeOffset now) =>
        now - r.Time > DisconnectedAfter ? Disconnected : r.State;

    private static string? Name(string? v)
    {
        if (v is null) return null;
        if (string.IsNullOrWhiteSpace(v) || v.Length > 255 || v.Any(char.IsControl))
            throw new UsageException($"--name '{v}': give a non-empty name of at most 255 printable characters");
        return v.Trim();
    }

    private static string Seconds(double? s) => s is { } v ? Format.Duration(v) : "-";

    private static string Age(TimeSpan age) => age < TimeSpan.Zero ? "now" : Format.Duration(age.TotalSeconds) + " ago";

    private static void WriteJson(JsonNode node) => Commands.WriteJson(w => node.WriteTo(w));

    private static void PrintInventory(ServerInventory inv)
    {
        Console.WriteLine($"host      {inv.HostName ?? "-"}");
        Console.WriteLine($"os        {inv.Os ?? "-"}{(inv.Kernel is null ? "" : $" (kernel {inv.Kernel})")}{(inv.Architecture is null ? "" : $", {inv.Architecture}")}");
        Console.WriteLine($"cpu       {(inv.CpuCount is { } n ? n.ToString(CultureInfo.InvariantCulture) + " x " : "")}{inv.CpuModel ?? "-"}");
        Console.WriteLine($"memory    {(inv.MemoryBytes is { } m ? Format.Bytes(m) : "-")}");
        Console.WriteLine();
        Console.WriteLine($"{"DISK",-12}  {"SIZE",10}  {"TYPE",-5}  MODEL / BACKING FILE");
        foreach (var d in inv.Disks)
        {
            string type = d.Loop ? "loop" : d.Rotational switch { true => "hdd", false => "ssd", null => "-" };
            Console.WriteLine($"{d.Name,-12}  {(d.SizeBytes is { } s ? Format.Bytes(s) : "-"),10}  {type,-5}  {d.BackingFile ?? d.Model ?? ""}");
        }
        Console.WriteLine();
        Console.WriteLine($"{"MOUNT POINT",-24}  {"TYPE",-8}  {"SIZE",10}  {"USED",10}  DEVICE");
        foreach (var f in inv.Filesystems)
            Console.WriteLine($"{f.MountPoint,-24}  {f.Type,-8}  {(f.SizeBytes is { } s ? Format.Bytes(s) : "-"),10}  {(f.UsedBytes is { } u ? Format.Bytes(u) : "-"),10}  {f.Device}");
        if (inv.NetworkInterfaces.Count > 0)
        {
            Console.WriteLine();
            Console.WriteLine($"{"INTERFACE",-12}  {"MAC",-17}  ADDRESSES");
            foreach (var nic in inv.NetworkInterfaces)
                Console.WriteLine($"{nic.Name,-12}  {nic.MacAddress ?? "-",-17}  {string.Join(", ", nic.Addresses)}");
        }
    }
}
