using System.Runtime.Versioning;

// Everything under test is Linux-only by design; the suite only runs on Linux.
[assembly: SupportedOSPlatform("linux")]
