using System.Globalization;
using System.Text;

namespace BlockRepl.Engine.Throttling;

/// <summary>A schedule text that cannot be read; the message names the bad token (one line).</summary>
public sealed class BandwidthScheduleException(string message) : FormatException(message);

/// <summary>
/// Rates by local time of day and day of week (docs/bandwidth.md). Text form:
/// <c>20Mbps Mon-Fri 08:00-18:00; 100Mbps Sat,Sun; unlimited</c>: rules separated by <c>;</c>, the first
/// that matches wins, a rule without days and times always matches, no match means unlimited. Rates are
/// bit/s in decimal units (<c>Kbps</c>, <c>Mbps</c>, <c>Gbps</c>) or <c>unlimited</c>; day ranges wrap
/// (<c>Fri-Mon</c>); times are <c>HH:MM-HH:MM</c> local, the end exclusive; <c>18:00-06:00</c> runs past
/// midnight (a window that starts on a listed day continues into the next morning). Immutable.
/// </summary>
public sealed class BandwidthSchedule
{
    private BandwidthSchedule(IReadOnlyList<BandwidthRule> rules) => Rules = rules;

    /// <summary>The rules in order.</summary>
    public IReadOnlyList<BandwidthRule> Rules { get; }

    /// <summary>No limit at any time.</summary>
    public static BandwidthSchedule Unlimited { get; } = new([]);

    /// <summary>True when no rule limits anything (every rule is <c>unlimited</c>).</summary>
    public bool IsUnlimited => Rules.All(r => r.BitsPerSecond is null);

    /// <summary>One fixed rate, bytes per second.</summary>
    public static BandwidthSchedule Fixed(long bytesPerSecond)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(bytesPerSecond, 1);
        return new([new BandwidthRule(checked(bytesPerSecond * 8), 0, null, null)]);
    }

    /// <summary>The rate at a local time in bytes per second; null when unlimited.</summary>
    public long? BytesPerSecondAt(DateTime local)
    {
        foreach (var rule in Rules)
            if (rule.Matches(local)) return rule.BitsPerSecond is long bits ? Math.Max(1, bits / 8) : null;
        return null;
    }

    /// <summary>Reads the text form; throws <see cref="BandwidthScheduleException"/> naming the bad token.</summary>
    public static BandwidthSchedule Parse(string text)
    {
        if (string.IsNullOrWhiteSpace(text)) throw new BandwidthScheduleException("empty bandwidth schedule: give a rate like 20Mbps, or rules like '20Mbps Mon-Fri 08:00-18:00; unlimited'");
        var parts = text.Split(';');
        var rules = new List<BandwidthRule>();
        for (int i = 0; i < parts.Length; i++)
        {
            string part = parts[i].Trim();
            if (part.Length == 0)
            {
                if (i == parts.Length - 1 && i > 0) continue;   // a trailing ';'
                throw new BandwidthScheduleException($"empty rule {i + 1} in bandwidth schedule '{text}'");
            }
            rules.Add(ParseRule(part));
        }
        return new(rules);
    }

    /// <summary>Builds a schedule from the JSON-friendly form (daemon config); same rules as the text form.</summary>
    public static BandwidthSchedule FromRules(IEnumerable<BandwidthRuleConfig> rules)
    {
        ArgumentNullException.ThrowIfNull(rules);
        var list = new List<BandwidthRule>();
        foreach (var r in rules)
        {
            long? bits = r.Mbps switch
            {
                null => null,
                double m when m > 0 && m * 1e6 <= long.MaxValue / 2 => (long)Math.Round(m * 1e6),
                double m => throw new BandwidthScheduleException($"mbps {m.ToString(CultureInfo.InvariantCulture)}: give a positive number of megabits per second, or leave it out for unlimited"),
            };
            byte days = string.IsNullOrWhiteSpace(r.Days) ? (byte)0 : ParseDays(r.Days.Trim());
            if ((r.From is null) != (r.To is null)) throw new BandwidthScheduleException($"rule '{r}': give both from and to, or neither");
            int? from = r.From is null ? null : ParseClock(r.From.Trim(), r.From, allow24: false);
            int? to = r.To is null ? null : ParseClock(r.To.Trim(), r.To, allow24: true);
            if (from is not null && from == to) throw new BandwidthScheduleException($"{r.From}-{r.To}: the window is empty (from equals to)");
            list.Add(new BandwidthRule(bits, days, from, to));
        }
        return new(list);
    }

    /// <summary>The JSON-friendly form: one entry per rule.</summary>
    public IReadOnlyList<BandwidthRuleConfig> ToRules() =>
        [.. Rules.Select(r => new BandwidthRuleConfig(
            r.Days == 0 ? null : FormatDays(r.Days),
            r.FromMinute is int f ? FormatClock(f) : null,
            r.ToMinute is int t ? FormatClock(t) : null,
            r.BitsPerSecond is long b ? b / 1e6 : null))];

    /// <summary>The canonical text form; <see cref="Parse"/> reads it back to the same schedule.</summary>
    public override string ToString() => Rules.Count == 0 ? "unlimited" : string.Join("; ", Rules.Select(r => r.ToString()));

    private static BandwidthRule ParseRule(string rule)
    {
        var tokens = rule.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries);
        long? bits = ParseRate(tokens[0]);
        byte days = 0;
        int? from = null, to = null;
        foreach (string token in tokens.Skip(1))
        {
            if (token.Contains(':'))
            {
                if (from is not null) throw new BandwidthScheduleException($"'{token}': a rule has at most one time window (in '{rule}')");
                (from, to) = ParseWindow(token);
            }
            else if (token.Length > 0 && char.IsLetter(token[0]))
            {
                if (days != 0) throw new BandwidthScheduleException($"'{token}': a rule has at most one list of days; join them with ',' (in '{rule}')");
                days = ParseDays(token);
            }
            else throw new BandwidthScheduleException($"'{token}': expected days (Mon-Fri, Sat,Sun) or a time window (08:00-18:00) after the rate (in '{rule}')");
        }
        return new BandwidthRule(bits, days, from, to);
    }

    /// <summary>Reads <c>20Mbps</c>, <c>1.5Gbps</c>, <c>512Kbps</c> or <c>unlimited</c> into bit/s (null: unlimited).</summary>
    public static long? ParseRate(string token)
    {
        ArgumentNullException.ThrowIfNull(token);
        string t = token.Trim();
        if (t.Equals("unlimited", StringComparison.OrdinalIgnoreCase)) return null;
        long unit = 0;
        if (t.Length > 4 && t.EndsWith("bps", StringComparison.OrdinalIgnoreCase))
        {
            unit = char.ToUpperInvariant(t[^4]) switch { 'K' => 1_000L, 'M' => 1_000_000L, 'G' => 1_000_000_000L, _ => 0 };
        }
        if (unit == 0 || !double.TryParse(t[..^4], NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out double value))
            throw new BandwidthScheduleException($"'{token}': not a rate; use a number with Kbps, Mbps or Gbps (bits per second, decimal), or 'unlimited'");
        double bits = Math.Round(value * unit);
        if (bits < 8 || bits > 1e15)
            throw new BandwidthScheduleException($"'{token}': the rate must be from 8 bit/s to 1000000Gbps");
        return (long)bits;
    }

    private static readonly string[] s_dayNames = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

    /// <summary>Bit 0 = Monday … bit 6 = Sunday.</summary>
    private static int DayBit(DayOfWeek d) => d == DayOfWeek.Sunday ? 6 : (int)d - 1;

    private static int ParseDay(string name, string token)
    {
        int i = Array.FindIndex(s_dayNames, n => n.Equals(name, StringComparison.OrdinalIgnoreCase));
        return i >= 0 ? i : throw new BandwidthScheduleException($"'{name}' in '{token}': not a day; use Mon, Tue, Wed, Thu, Fri, Sat, Sun");
    }

    private static byte ParseDays(string token)
    {
        int mask = 0;
        foreach (string item in token.Split(','))
        {
            if (item.Length == 0) throw new BandwidthScheduleException($"'{token}': empty day in the list");
            int dash = item.IndexOf('-');
            if (dash < 0) { mask |= 1 << ParseDay(item, token); continue; }
            int first = ParseDay(item[..dash], token), last = ParseDay(item[(dash + 1)..], token);
            // Ranges wrap: Fri-Mon is Fri, Sat, Sun, Mon.
            for (int d = first; ; d = (d + 1) % 7)
            {
                mask |= 1 << d;
                if (d == last) break;
            }
        }
        return (byte)mask;
    }

    private static (int From, int To) ParseWindow(string token)
    {
        int dash = token.IndexOf('-');
        if (dash < 0) throw new BandwidthScheduleException($"'{token}': a time window is HH:MM-HH:MM (e.g. 08:00-18:00)");
        int from = ParseClock(token[..dash], token, allow24: false), to = ParseClock(token[(dash + 1)..], token, allow24: true);
        if (from == to) throw new BandwidthScheduleException($"'{token}': the window is empty (from equals to); leave the times out for all day");
        return (from, to);
    }

    private static int ParseClock(string text, string token, bool allow24)
    {
        var p = text.Split(':');
        if (p.Length == 2 && p[0].Length is 1 or 2 && p[1].Length == 2
            && int.TryParse(p[0], NumberStyles.None, CultureInfo.InvariantCulture, out int h)
            && int.TryParse(p[1], NumberStyles.None, CultureInfo.InvariantCulture, out int m)
            && m < 60 && (h < 24 || (allow24 && h == 24 && m == 0)))
            return h * 60 + m;
        throw new BandwidthScheduleException($"'{text}' in '{token}': not a time; use HH:MM from 00:00 to 23:59 (24:00 as an end)");
    }

    private static string FormatClock(int minute) => $"{minute / 60:00}:{minute % 60:00}";

    /// <summary>Bit/s in the largest decimal unit that keeps it short: 20Mbps, 1.5Gbps, 512Kbps.</summary>
    public static string FormatRate(long bits)
    {
        (long unit, string name) = bits % 1_000_000_000 == 0 ? (1_000_000_000L, "Gbps") : bits % 1_000_000 == 0 ? (1_000_000L, "Mbps") : (1_000L, "Kbps");
        return (bits / (double)unit).ToString("0.###", CultureInfo.InvariantCulture) + name;
    }

    /// <summary>Runs of three or more days as ranges, others as a list; a run across Sunday→Monday stays one range.</summary>
    internal static string FormatDays(byte mask)
    {
        if (mask == 0x7F) return "Mon-Sun";
        int start;
        // Start right after a day that is not in the set, so a wrapping run is not split.
        for (start = 0; start < 7; start++)
            if (((mask >> ((start + 6) % 7)) & 1) == 0 && ((mask >> start) & 1) == 1) break;
        var sb = new StringBuilder();
        for (int i = 0; i < 7;)
        {
            int d = (start + i) % 7;
            if (((mask >> d) & 1) == 0) { i++; continue; }
            int len = 1;
            while (i + len < 7 && ((mask >> ((start + i + len) % 7)) & 1) == 1) len++;
            if (sb.Length > 0) sb.Append(',');
            if (len >= 3) sb.Append(s_dayNames[d]).Append('-').Append(s_dayNames[(d + len - 1) % 7]);
            else for (int k = 0; k < len; k++) sb.Append(k > 0 ? "," : "").Append(s_dayNames[(d + k) % 7]);
            i += len;
        }
        return sb.ToString();
    }

    /// <summary>
    /// One rule: a rate (bit/s, null = unlimited), the days it applies to (bit 0 = Monday; 0 = every day) and an
    /// optional window in minutes after midnight (<see cref="ToMinute"/> exclusive; below <see cref="FromMinute"/>
    /// means the window runs past midnight).
    /// </summary>
    public sealed record BandwidthRule(long? BitsPerSecond, byte Days, int? FromMinute, int? ToMinute)
    {
        private bool OnDay(DayOfWeek d) => Days == 0 || ((Days >> DayBit(d)) & 1) == 1;

        public bool Matches(DateTime local)
        {
            if (FromMinute is not int from || ToMinute is not int to) return OnDay(local.DayOfWeek);
            int minute = local.Hour * 60 + local.Minute;
            if (from < to) return OnDay(local.DayOfWeek) && minute >= from && minute < to;
            // Past midnight: the evening part belongs to today, the morning part to the window that began yesterday.
            return (minute >= from && OnDay(local.DayOfWeek)) || (minute < to && OnDay(local.AddDays(-1).DayOfWeek));
        }

        public override string ToString()
        {
            var sb = new StringBuilder(BitsPerSecond is long b ? FormatRate(b) : "unlimited");
            if (Days != 0) sb.Append(' ').Append(FormatDays(Days));
            if (FromMinute is int f && ToMinute is int t) sb.Append(' ').Append(FormatClock(f)).Append('-').Append(FormatClock(t));
            return sb.ToString();
        }
    }
}

/// <summary>
/// One rule of a schedule in the daemon's JSON config: <c>{"days": "Mon-Fri", "from": "08:00", "to": "18:00", "mbps": 20}</c>.
/// Every member is optional: no days = every day, no from/to = all day, no mbps = unlimited.
/// </summary>
public sealed record BandwidthRuleConfig(string? Days = null, string? From = null, string? To = null, double? Mbps = null);
