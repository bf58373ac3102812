using BlockRepl.Engine.Throttling;

namespace BlockRepl.Core.Tests.Throttling;

public sealed class BandwidthScheduleTests
{
    // 2026-11-30 is a Monday.
    private static DateTime At(DayOfWeek day, int hour, int minute = 0) =>
        new DateTime(2026, 11, 30, hour, minute, 0).AddDays(((int)day + 6) % 7);

    private const string Office = "20Mbps Mon-Fri 08:00-18:00; 100Mbps Sat,Sun; unlimited";

    [Fact]
    public void FirstMatchingRuleWins_DefaultRuleLast()
    {
        var s = BandwidthSchedule.Parse(Office);
        Assert.Equal(2_500_000, s.BytesPerSecondAt(At(DayOfWeek.Monday, 8)));
        Assert.Equal(2_500_000, s.BytesPerSecondAt(At(DayOfWeek.Friday, 17, 59)));
        Assert.Null(s.BytesPerSecondAt(At(DayOfWeek.Friday, 18)));           // 'to' is exclusive
        Assert.Null(s.BytesPerSecondAt(At(DayOfWeek.Wednesday, 7, 59)));
        Assert.Equal(12_500_000, s.BytesPerSecondAt(At(DayOfWeek.Saturday, 12)));
        Assert.Equal(12_500_000, s.BytesPerSecondAt(At(DayOfWeek.Sunday, 0)));
    }

    [Fact]
    public void EarlierRuleShadowsLaterOne()
    {
        var s = BandwidthSchedule.Parse("1Mbps; 50Mbps Mon-Fri");
        Assert.Equal(125_000, s.BytesPerSecondAt(At(DayOfWeek.Tuesday, 10)));
    }

    [Fact]
    public void NoMatchingRule_IsUnlimited()
    {
        var s = BandwidthSchedule.Parse("10Mbps Sat");
        Assert.Null(s.BytesPerSecondAt(At(DayOfWeek.Monday, 10)));
        Assert.Equal(1_250_000, s.BytesPerSecondAt(At(DayOfWeek.Saturday, 10)));
    }

    [Fact]
    public void DayRangesWrapOverTheWeekend()
    {
        var s = BandwidthSchedule.Parse("5Mbps Fri-Mon");
        foreach (var d in new[] { DayOfWeek.Friday, DayOfWeek.Saturday, DayOfWeek.Sunday, DayOfWeek.Monday })
            Assert.Equal(625_000, s.BytesPerSecondAt(At(d, 12)));
        foreach (var d in new[] { DayOfWeek.Tuesday, DayOfWeek.Wednesday, DayOfWeek.Thursday })
            Assert.Null(s.BytesPerSecondAt(At(d, 12)));
    }

    [Fact]
    public void WindowPastMidnight_BelongsToTheDayItStarts()
    {
        var s = BandwidthSchedule.Parse("8Mbps Fri 18:00-06:00");
        Assert.Equal(1_000_000, s.BytesPerSecondAt(At(DayOfWeek.Friday, 18)));
        Assert.Equal(1_000_000, s.BytesPerSecondAt(At(DayOfWeek.Friday, 23, 59)));
        Assert.Equal(1_000_000, s.BytesPerSecondAt(At(DayOfWeek.Saturday, 5, 59)));   // Friday's night
        Assert.Null(s.BytesPerSecondAt(At(DayOfWeek.Saturday, 6)));
        Assert.Null(s.BytesPerSecondAt(At(DayOfWeek.Friday, 5)));                     // Thursday's night: not listed
        Assert.Null(s.BytesPerSecondAt(At(DayOfWeek.Saturday, 18)));
    }

    [Fact]
    public void WindowPastMidnight_WithoutDays_EveryNight()
    {
        var s = BandwidthSchedule.Parse("1Gbps 22:00-06:00; 10Mbps");
        Assert.Equal(125_000_000, s.BytesPerSecondAt(At(DayOfWeek.Monday, 2)));
        Assert.Equal(125_000_000, s.BytesPerSecondAt(At(DayOfWeek.Sunday, 23)));
        Assert.Equal(1_250_000, s.BytesPerSecondAt(At(DayOfWeek.Sunday, 12)));
    }

    [Theory]
    [InlineData("512Kbps", 64_000L)]
    [InlineData("1.5Gbps", 187_500_000L)]
    [InlineData("20mbps", 2_500_000L)]
    [InlineData("unlimited", null)]
    [InlineData("UNLIMITED", null)]
    public void RatesAreDecimalBitsPerSecond(string text, long? bytesPerSecond) =>
        Assert.Equal(bytesPerSecond, BandwidthSchedule.Parse(text).BytesPerSecondAt(At(DayOfWeek.Monday, 12)));

    [Theory]
    [InlineData("20MBps x", "'x'")]
    [InlineData("20Mb", "'20Mb'")]
    [InlineData("fast", "'fast'")]
    [InlineData("-5Mbps", "'-5Mbps'")]
    [InlineData("0Mbps", "'0Mbps'")]
    [InlineData("20Mbps Mon-Fry", "'Fry'")]
    [InlineData("20Mbps Mon 25:00-26:00", "'25:00'")]
    [InlineData("20Mbps Mon 08:00", "'08:00'")]
    [InlineData("20Mbps Mon 08:60-09:00", "'08:60'")]
    [InlineData("20Mbps 08:00-08:00", "'08:00-08:00'")]
    [InlineData("20Mbps Mon Tue", "'Tue'")]
    [InlineData("20Mbps 1-2", "'1-2'")]
    [InlineData("; 20Mbps", "empty rule 1")]
    [InlineData("", "empty")]
    public void BadInput_OneLineErrorNamingTheToken(string text, string mentions)
    {
        var e = Assert.Throws<BandwidthScheduleException>(() => BandwidthSchedule.Parse(text));
        Assert.Contains(mentions, e.Message, StringComparison.Ordinal);
        Assert.DoesNotContain('\n', e.Message);
    }

    [Theory]
    [InlineData(Office, Office)]
    [InlineData("5Mbps Fri-Mon 18:00-06:00", "5Mbps Fri-Mon 18:00-06:00")]
    [InlineData("5Mbps sun,mon,tue,thu 00:00-24:00", "5Mbps Thu,Sun-Tue 00:00-24:00")]
    [InlineData("1500Kbps Mon-Sun;", "1500Kbps Mon-Sun")]
    [InlineData("2000000Kbps Wed", "2Gbps Wed")]
    [InlineData("0.5Mbps Sat-Mon", "500Kbps Sat-Mon")]
    public void ToString_IsCanonical_AndRoundTrips(string text, string canonical)
    {
        var s = BandwidthSchedule.Parse(text);
        Assert.Equal(canonical, s.ToString());
        var again = BandwidthSchedule.Parse(s.ToString());
        Assert.Equal(s.ToString(), again.ToString());
        for (var t = At(DayOfWeek.Monday, 0); t < At(DayOfWeek.Monday, 0).AddDays(7); t = t.AddMinutes(30))
            Assert.Equal(s.BytesPerSecondAt(t), again.BytesPerSecondAt(t));
    }

    [Fact]
    public void JsonRuleForm_ConvertsToTheSameSchedule()
    {
        var fromJson = BandwidthSchedule.FromRules(
        [
            new BandwidthRuleConfig("Mon-Fri", "08:00", "18:00", 20),
            new BandwidthRuleConfig("Sat,Sun", Mbps: 100),
            new BandwidthRuleConfig(),
        ]);
        Assert.Equal(Office, fromJson.ToString());
        var back = BandwidthSchedule.FromRules(BandwidthSchedule.Parse(Office).ToRules());
        Assert.Equal(Office, back.ToString());
        Assert.Equal(new BandwidthRuleConfig("Mon-Fri", "08:00", "18:00", 20), BandwidthSchedule.Parse(Office).ToRules()[0]);
        var json = System.Text.Json.JsonSerializer.Serialize(BandwidthSchedule.Parse(Office).ToRules());
        var parsed = System.Text.Json.JsonSerializer.Deserialize<BandwidthRuleConfig[]>(json)!;
        Assert.Equal(Office, BandwidthSchedule.FromRules(parsed).ToString());
    }

    [Fact]
    public void JsonRuleForm_BadValuesAreReported()
    {
        Assert.Contains("'Moon'", Assert.Throws<BandwidthScheduleException>(() => BandwidthSchedule.FromRules([new BandwidthRuleConfig("Moon")])).Message, StringComparison.Ordinal);
        Assert.Contains("both from and to", Assert.Throws<BandwidthScheduleException>(() => BandwidthSchedule.FromRules([new BandwidthRuleConfig(From: "08:00")])).Message, StringComparison.Ordinal);
        Assert.Contains("mbps -1", Assert.Throws<BandwidthScheduleException>(() => BandwidthSchedule.FromRules([new BandwidthRuleConfig(Mbps: -1)])).Message, StringComparison.Ordinal);
    }
}
