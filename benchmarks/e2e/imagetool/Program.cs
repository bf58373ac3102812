using System.Globalization;
using BlockRepl.TestKit;

// Usage (all sizes in bytes):
//   imagetool ext4 IMAGE SIZE FILL           realistic ext4 image, fully allocated (TestKit recipe)
//   imagetool modify IMAGE FRACTION BLOCK SEED   scattered aligned overwrites; prints changedBlocks=N changedBytes=N
//   imagetool mixed IMAGE SIZE SEED          synthetic "used disk" image
static long Num(string s) => long.Parse(s, NumberStyles.None, CultureInfo.InvariantCulture);

try
{
    switch (args)
    {
        case ["ext4", var image, var size, var fill]:
            DiskImages.RealisticExt4(image, Num(size), Num(fill), allocate: true);
            return 0;
        case ["modify", var image, var fraction, var block, var seed]:
            long[] offsets = WriteLoad.ScatteredWritesFraction(
                image, double.Parse(fraction, CultureInfo.InvariantCulture), checked((int)Num(block)), checked((int)Num(seed)));
            Console.WriteLine(FormattableString.Invariant($"changedBlocks={offsets.Length} changedBytes={offsets.LongLength * Num(block)}"));
            return 0;
        case ["mixed", var image, var size, var seed]:
            DiskImages.Mixed(image, Num(size), checked((int)Num(seed)));
            return 0;
        default:
            Console.Error.WriteLine("usage: imagetool ext4 IMAGE SIZE FILL | modify IMAGE FRACTION BLOCK SEED | mixed IMAGE SIZE SEED");
            return 2;
    }
}
catch (Exception ex) when (ex is IOException or InvalidOperationException or ArgumentException or FormatException or OverflowException or UnauthorizedAccessException)
{
    Console.Error.WriteLine($"imagetool: {ex.Message}");
    return 1;
}
