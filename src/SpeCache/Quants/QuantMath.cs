using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace SpeCache.Quants;

/// <summary>
/// Rounding and reduction helpers shared by the formats. The rounding functions reproduce C's
/// exactly, because ggml's reference quantizers are defined by them and we want the same bytes.
/// </summary>
internal static unsafe class QuantMath
{
    /// <summary>The 256-bit integer kernels need AVX2 and FMA; otherwise the scalar references run.</summary>
    public static readonly bool Simd256 = Avx2.IsSupported && Fma.IsSupported;

    /// <summary>ggml's <c>GROUP_MAX_EPS</c>: below this a group is treated as all zeros.</summary>
    public const float GroupMaxEps = 1e-15f;

    /// <summary>
    /// ggml's <c>nearest_int</c>: adding 1.5 * 2^23 leaves the rounded integer in the low mantissa
    /// bits, which is round-half-to-even for |x| &lt; 2^22. Written the same way so ties agree.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int NearestInt(float x)
    {
        float v = x + 12582912f;
        return (BitConverter.SingleToInt32Bits(v) & 0x007fffff) - 0x00400000;
    }

    /// <summary>C's <c>roundf</c>: halves away from zero.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float RoundAway(float x) => MathF.Round(x, MidpointRounding.AwayFromZero);

    /// <summary>
    /// <c>roundf</c> on eight lanes: the hardware rounds halves to even, so exact halves (which the
    /// truncated fraction reveals without error) are moved away from zero by hand.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> RoundAway(Vector256<float> x)
    {
        var t = Vector256.Truncate(x);
        var isHalf = Vector256.Equals(Vector256.Abs(x - t), Vector256.Create(0.5f));
        var away = t + Vector256.CopySign(Vector256<float>.One, x);
        return Vector256.ConditionalSelect(isHalf, away, Vector256.Round(x));
    }

    /// <summary>
    /// Half bits to float, exactly as <c>(float)Half</c> (a test checks all 65536 inputs) but
    /// inlined: the .NET conversion is a call, and the dots convert two scales per 32 values.
    /// Normal halves are rebiased with an integer add; subnormal halves (common for Q6_K scales of
    /// real weights, ~1e-5) go through an exact int-to-float conversion, because arithmetic on
    /// subnormal floats takes a slow microcode path.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float ToFloat(ushort half)
    {
        uint h = half;
        uint e = h & 0x7C00;
        uint sign = (h & 0x8000) << 16;
        if (e == 0)
            return BitConverter.UInt32BitsToSingle(BitConverter.SingleToUInt32Bits((h & 0x3FF) * 5.9604645e-8f) | sign); // m * 2^-24
        uint bias = e == 0x7C00 ? 224u << 23 : 112u << 23; // Inf/NaN to exponent 255, else 127 - 15
        return BitConverter.UInt32BitsToSingle((((h & 0x7FFF) << 13) + bias) | sign);
    }

    /// <summary>ggml's <c>GGML_FP32_TO_FP16</c> rounds to nearest even, as the .NET conversion does.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ushort ToHalfBits(float x) => BitConverter.HalfToUInt16Bits((Half)x);

    /// <summary>
    /// Eight 32-bit lanes holding halves (zero-extended) to floats, without F16C (not exposed by
    /// .NET); as <see cref="ToFloat(ushort)"/>, by the rescaling of <see cref="HalfToSingle(Vector512{uint})"/>
    /// (9 operations; the exponent-by-cases form took 14, and a full-cache decode step at depth on an
    /// AVX2 CPU converts a gigabyte of halves).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> HalfToSingle(Vector256<uint> h)
    {
        var scaled = (((h & Vector256.Create(0x7FFFu)) << 13).AsSingle() * Vector256.Create(HalfRebias)).AsUInt32();
        var infinityOrNaN = Vector256.Equals(h & Vector256.Create(0x7C00u), Vector256.Create(0x7C00u));
        return (scaled | (infinityOrNaN & Vector256.Create(0x7F800000u)) | ((h & Vector256.Create(0x8000u)) << 16)).AsSingle();
    }

    /// <summary>
    /// Sixteen 32-bit lanes holding halves to floats, as <see cref="ToFloat(ushort)"/>, in 9
    /// operations (a full-cache decode step at depth spends most of its time here). The exponent
    /// and mantissa move into a float's places, and multiplying by 2^112 rebiases the exponent:
    /// exact for normal halves, and for zeros and subnormals too (the moved bits are then a float
    /// subnormal, m × 2^-136, times 2^112 is m × 2^-24). Infinities and
    /// NaNs get the float's all-ones exponent; the mantissa bits, kept by the power-of-two scaling,
    /// tell them apart.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> HalfToSingle(Vector512<uint> h)
    {
        var scaled = (((h & Vector512.Create(0x7FFFu)) << 13).AsSingle() * Vector512.Create(HalfRebias)).AsUInt32();
        var infinityOrNaN = Vector512.Equals(h & Vector512.Create(0x7C00u), Vector512.Create(0x7C00u));
        return (scaled | (infinityOrNaN & Vector512.Create(0x7F800000u)) | ((h & Vector512.Create(0x8000u)) << 16)).AsSingle();
    }

    /// <summary>
    /// 2^112: a half's exponent and mantissa moved into a float's places make a float 2^-112 times
    /// the half's value, and multiplying by this rebiases it. Code that reads halves without the
    /// multiply (<see cref="ScaledHalfToSingle(Vector256{int})"/>) puts this factor on the other
    /// side of its products instead: a power of two, so every product is the exact one.
    /// </summary>
    public const float HalfRebias = 5.192296858534828E+33f;

    /// <summary>
    /// Eight halves that are neither infinite nor NaN, from their sign-extended lanes (a
    /// sign-extending load widens them), as floats 2^-112 times their value, in 2 operations: the
    /// sign-extension puts the sign at bit 31 already, and copies of it at bits 28-30 once shifted,
    /// which the mask clears. Exact for normals, subnormals and zeros; an infinity or NaN comes out
    /// finite (2^-96 times its mantissa's 1.m): callers know their halves have none.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> ScaledHalfToSingle(Vector256<int> signExtended) =>
        ((signExtended << 13) & Vector256.Create(unchecked((int)0x8FFFFFFF))).AsSingle();

    /// <summary><see cref="ScaledHalfToSingle(Vector256{int})"/> on sixteen lanes.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> ScaledHalfToSingle(Vector512<int> signExtended) =>
        ((signExtended << 13) & Vector512.Create(unchecked((int)0x8FFFFFFF))).AsSingle();

    /// <summary><see cref="ScaledHalfToSingle(Vector256{int})"/> on one half's bits.</summary>
    public static float ScaledHalfToSingle(ushort bits) => BitConverter.Int32BitsToSingle(((short)bits << 13) & unchecked((int)0x8FFFFFFF));

    /// <summary>
    /// Eight halves that are neither infinite nor NaN to floats, exactly, in 3 operations instead
    /// of <see cref="HalfToSingle(Vector256{uint})"/>'s 9: <see cref="ScaledHalfToSingle(Vector256{int})"/>
    /// times <see cref="HalfRebias"/>.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> FiniteHalfToSingle(Vector256<int> signExtended) =>
        ScaledHalfToSingle(signExtended) * Vector256.Create(HalfRebias);

    /// <summary><see cref="FiniteHalfToSingle(Vector256{int})"/> on sixteen lanes.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> FiniteHalfToSingle(Vector512<int> signExtended) =>
        ScaledHalfToSingle(signExtended) * Vector512.Create(HalfRebias);

    /// <summary>Four 32-bit lanes holding halves to floats, as <see cref="HalfToSingle(Vector512{uint})"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<float> HalfToSingle(Vector128<uint> h)
    {
        var scaled = (((h & Vector128.Create(0x7FFFu)) << 13).AsSingle() * Vector128.Create(HalfRebias)).AsUInt32();
        var infinityOrNaN = Vector128.Equals(h & Vector128.Create(0x7C00u), Vector128.Create(0x7C00u));
        return (scaled | (infinityOrNaN & Vector128.Create(0x7F800000u)) | ((h & Vector128.Create(0x8000u)) << 16)).AsSingle();
    }

    /// <summary>
    /// The half scales of eight consecutive blocks <paramref name="stride"/> bytes apart, as floats:
    /// one vector conversion instead of eight scalar ones.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static unsafe Vector256<float> Scales8(byte* first, int stride) =>
        HalfToSingle(Avx2.ConvertToVector256Int32(Vector128.Create(
            *(ushort*)first, *(ushort*)(first + stride), *(ushort*)(first + 2 * stride), *(ushort*)(first + 3 * stride),
            *(ushort*)(first + 4 * stride), *(ushort*)(first + 5 * stride), *(ushort*)(first + 6 * stride), *(ushort*)(first + 7 * stride))).AsUInt32());

    /// <summary>
    /// Portable (Vector128: SSE, NEON) dot of 16 signed bytes: widening to 16 bits cannot overflow
    /// (|product| ≤ 128 * 127), widening the products to 32 bits gives four exact partial sums.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<int> Dot16(Vector128<sbyte> a, Vector128<sbyte> b)
    {
        var (alo, ahi) = Vector128.Widen(a);
        var (blo, bhi) = Vector128.Widen(b);
        var (p0, p1) = Vector128.Widen(alo * blo);
        var (p2, p3) = Vector128.Widen(ahi * bhi);
        return (p0 + p1) + (p2 + p3);
    }

    /// <summary>Sum of eight int lanes.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int Sum(Vector256<int> v) => Vector256.Sum(v);

    /// <summary>|x| as unsigned and y with x's sign: lets u8 x s8 instructions multiply two signed vectors.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<int> SignedDot(Vector256<sbyte> x, Vector256<sbyte> y)
    {
        var ax = Avx2.Abs(x);
        var sy = Avx2.Sign(y, x);
        return UnsignedDot(ax, sy);
    }

    /// <summary>
    /// Eight sums of four u8 x s8 products. AVX-VNNI does it in one instruction (.NET 10 exposes no separate AVX512-VNNI class); AVX2's maddubs pairs
    /// cannot overflow here because our unsigned side is at most 128 and the signed side at most 127.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<int> UnsignedDot(Vector256<byte> u, Vector256<sbyte> s) =>
        AvxVnni.IsSupported ? AvxVnni.MultiplyWideningAndAdd(Vector256<int>.Zero, u, s) : UnsignedDotAvx2(u, s);

    /// <summary>The AVX2 form of <see cref="UnsignedDot"/>, separate so tests run it on VNNI machines too.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector256<int> UnsignedDotAvx2(Vector256<byte> u, Vector256<sbyte> s) =>
        Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(u, s), Vector256<short>.One);
}
