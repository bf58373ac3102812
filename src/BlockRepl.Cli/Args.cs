using BlockRepl.Engine;

namespace BlockRepl.Cli;

/// <summary>A small, strict argument parser: positionals, <c>--opt value</c>, <c>--opt=value</c>, flags.</summary>
internal sealed class Args
{
    private readonly Dictionary<string, List<string>> _options = new(StringComparer.Ordinal);
    private readonly HashSet<string> _flags = new(StringComparer.Ordinal);
    public List<string> Positionals { get; } = [];

    public static Args Parse(IEnumerable<string> argv, ISet<string> valueOptions, ISet<string> flagOptions)
    {
        var a = new Args();
        using var e = argv.GetEnumerator();
        bool onlyPositionals = false;
        while (e.MoveNext())
        {
            string arg = e.Current;
            if (onlyPositionals || !arg.StartsWith("--", StringComparison.Ordinal) || arg == "-")
            {
                a.Positionals.Add(arg);
                continue;
            }
            if (arg == "--") { onlyPositionals = true; continue; }
            string name = arg;
            string? value = null;
            int eq = arg.IndexOf('=');
            if (eq > 0) { name = arg[..eq]; value = arg[(eq + 1)..]; }
            if (flagOptions.Contains(name))
            {
                if (value is not null) throw new UsageException($"option {name} takes no value");
                a._flags.Add(name);
            }
            else if (valueOptions.Contains(name))
            {
                if (value is null)
                {
                    if (!e.MoveNext() || e.Current.StartsWith("--", StringComparison.Ordinal)) throw new UsageException($"option {name} needs a value");
                    value = e.Current;
                }
                if (!a._options.TryGetValue(name, out var list)) a._options[name] = list = [];
                list.Add(value);
            }
            else throw new UsageException($"unknown option {name}");
        }
        return a;
    }

    public bool Flag(string name) => _flags.Contains(name);
    public string? Value(string name)
    {
        if (!_options.TryGetValue(name, out var l)) return null;
        if (l.Count > 1) throw new UsageException($"option {name} given more than once");
        return l[0];
    }
    public IReadOnlyList<string> Values(string name) => _options.TryGetValue(name, out var l) ? l : [];
    public string Required(string name, string what) => Value(name) ?? throw new UsageException($"missing {name} {what}");

    public static long ParseSize(string text, string option)
    {
        string t = text.Trim();
        long mult = 1;
        if (t.Length > 0 && char.IsLetter(t[^1]))
        {
            char u = char.ToUpperInvariant(t.TrimEnd('B', 'b', 'i')[^1]);
            mult = u switch { 'K' => 1L << 10, 'M' => 1L << 20, 'G' => 1L << 30, 'T' => 1L << 40, _ => throw new UsageException($"{option}: cannot read size '{text}'") };
            t = t.TrimEnd('B', 'b', 'i')[..^1];
        }
        if (!long.TryParse(t, out long v) || v <= 0) throw new UsageException($"{option}: cannot read size '{text}'");
        return v * mult;
    }
}
