using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace SpeCache.Quants;

/// <summary>
/// How the 256-bit dots of 16-bit float weight rows read eight weights into float lanes: a struct
/// type argument, so each way gets its own compiled loop with the read inlined.
/// </summary>
internal unsafe interface IHalfReader
{
    static abstract Vector256<float> Load8(ushort* at);

    static abstract float ToFloat(ushort bits);
}

/// <summary>F16 halves, exactly as <c>(float)Half</c>, infinities and NaNs included (9 operations per 8).</summary>
internal readonly unsafe struct ExactHalves : IHalfReader
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Load8(ushort* at) => QuantMath.HalfToSingle(Vector256.WidenLower(Vector128.Load(at).ToVector256Unsafe()));

    public static float ToFloat(ushort bits) => QuantMath.ToFloat(bits);
}

/// <summary>
/// F16 halves known finite, read as floats 2^-112 times their value (a shift and a mask; the
/// activations carry the 2^112, see <see cref="F16.ScaleActivations"/>).
/// </summary>
internal readonly unsafe struct ScaledHalves : IHalfReader
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Load8(ushort* at) =>
        QuantMath.ScaledHalfToSingle(Avx2.IsSupported ? Avx2.ConvertToVector256Int32((short*)at) : Vector256.WidenLower(Vector128.Load((short*)at).ToVector256Unsafe()));

    public static float ToFloat(ushort bits) => QuantMath.ScaledHalfToSingle(bits);
}

/// <summary>bfloat16: the top half of a float, moved up.</summary>
internal readonly unsafe struct BFloat16s : IHalfReader
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Load8(ushort* at) => (Vector256.WidenLower(Vector128.Load(at).ToVector256Unsafe()) << 16).AsSingle();

    public static float ToFloat(ushort bits) => BF16.ToFloat(bits);
}

/// <summary>
/// The 256-bit dots of 16-bit float weight rows (F16, BF16) with float activations: two
/// accumulators over 16 weights a step, then 8, the lanes summed, the rest added one by one. The
/// two-row form keeps each row's lanes and order, so its results are the one-row form's bits.
/// </summary>
internal static unsafe class HalfRows
{
    public static float Dot256<T>(ReadOnlySpan<byte> w, ReadOnlySpan<byte> x, int cols) where T : struct, IHalfReader
    {
        if (w.Length < cols * 2 || x.Length < cols * 4) throw new ArgumentException("row too short");
        fixed (byte* pw = w)
        fixed (byte* px = x)
        {
            ushort* h = (ushort*)pw;
            float* f = (float*)px;
            var acc0 = Vector256<float>.Zero;
            var acc1 = Vector256<float>.Zero;
            int i = 0;
            for (; i + 16 <= cols; i += 16)
            {
                if ((i & 31) == 0) TileKernel.PrefetchAhead((byte*)(h + i), 64);
                acc0 = Vector256.FusedMultiplyAdd(T.Load8(h + i), Vector256.Load(f + i), acc0);
                acc1 = Vector256.FusedMultiplyAdd(T.Load8(h + i + 8), Vector256.Load(f + i + 8), acc1);
            }
            for (; i + 8 <= cols; i += 8)
                acc0 = Vector256.FusedMultiplyAdd(T.Load8(h + i), Vector256.Load(f + i), acc0);
            float sum = Vector256.Sum(acc0 + acc1);
            for (; i < cols; i++) sum += T.ToFloat(h[i]) * f[i];
            return sum;
        }
    }

    /// <summary>One weight row against two activation rows, each weight read once for both.</summary>
    public static void Dot2_256<T>(ReadOnlySpan<byte> w, ReadOnlySpan<byte> x0, ReadOnlySpan<byte> x1, int cols, out float y0, out float y1)
        where T : struct, IHalfReader
    {
        if (w.Length < cols * 2 || x0.Length < cols * 4 || x1.Length < cols * 4) throw new ArgumentException("row too short");
        fixed (byte* pw = w)
        fixed (byte* px0 = x0)
        fixed (byte* px1 = x1)
        {
            ushort* h = (ushort*)pw;
            float* f = (float*)px0, g = (float*)px1;
            Vector256<float> a0 = Vector256<float>.Zero, a1 = Vector256<float>.Zero, b0 = Vector256<float>.Zero, b1 = Vector256<float>.Zero;
            int i = 0;
            for (; i + 16 <= cols; i += 16)
            {
                var w0 = T.Load8(h + i);
                var w1 = T.Load8(h + i + 8);
                a0 = Vector256.FusedMultiplyAdd(w0, Vector256.Load(f + i), a0);
                a1 = Vector256.FusedMultiplyAdd(w1, Vector256.Load(f + i + 8), a1);
                b0 = Vector256.FusedMultiplyAdd(w0, Vector256.Load(g + i), b0);
                b1 = Vector256.FusedMultiplyAdd(w1, Vector256.Load(g + i + 8), b1);
            }
            for (; i + 8 <= cols; i += 8)
            {
                var w0 = T.Load8(h + i);
                a0 = Vector256.FusedMultiplyAdd(w0, Vector256.Load(f + i), a0);
                b0 = Vector256.FusedMultiplyAdd(w0, Vector256.Load(g + i), b0);
            }
            float s0 = Vector256.Sum(a0 + a1), s1 = Vector256.Sum(b0 + b1);
            for (; i < cols; i++)
            {
                float wi = T.ToFloat(h[i]);
                s0 += wi * f[i];
                s1 += wi * g[i];
            }
            (y0, y1) = (s0, s1);
        }
    }
}
