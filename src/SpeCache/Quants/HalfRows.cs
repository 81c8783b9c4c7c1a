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

    static abstract Vector512<float> Load16(ushort* at);

    static abstract float ToFloat(ushort bits);
}

/// <summary>F16 halves, exactly as <c>(float)Half</c>, infinities and NaNs included (9 operations per 8).</summary>
internal readonly unsafe struct ExactHalves : IHalfReader
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Load8(ushort* at) => QuantMath.HalfToSingle(Vector256.WidenLower(Vector128.Load(at).ToVector256Unsafe()));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Load16(ushort* at) => QuantMath.HalfToSingle(Vector512.WidenLower(Vector256.Load(at).ToVector512Unsafe()));

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

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Load16(ushort* at) => QuantMath.ScaledHalfToSingle(Avx512F.ConvertToVector512Int32(Vector256.Load((short*)at)));

    public static float ToFloat(ushort bits) => QuantMath.ScaledHalfToSingle(bits);
}

/// <summary>bfloat16: the top half of a float, moved up.</summary>
internal readonly unsafe struct BFloat16s : IHalfReader
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Load8(ushort* at) => (Vector256.WidenLower(Vector128.Load(at).ToVector256Unsafe()) << 16).AsSingle();

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Load16(ushort* at) => (Vector512.WidenLower(Vector256.Load(at).ToVector512Unsafe()) << 16).AsSingle();

    public static float ToFloat(ushort bits) => BF16.ToFloat(bits);
}

/// <summary>
/// The dots of 16-bit float weight rows (F16, BF16) with float activations. 256-bit: two
/// accumulators over 16 weights a step, then 8, the lanes summed, the rest added one by one.
/// 512-bit (<see cref="Dot512{T}"/>): one accumulator over 16 weights a step, each product rounded
/// before it is added, the lanes summed, the rest one by one: one accumulator per output is what
/// lets the float tile hold four weight rows by four activation rows in registers
/// (<see cref="FloatTile"/>). The two-row forms keep each row's lanes and order, so their results
/// are the one-row forms' bits.
/// </summary>
internal static unsafe class HalfRows
{
    public static float Dot512<T>(ReadOnlySpan<byte> w, ReadOnlySpan<byte> x, int cols) where T : struct, IHalfReader
    {
        if (w.Length < cols * 2 || x.Length < cols * 4) throw new ArgumentException("row too short");
        fixed (byte* pw = w)
        fixed (byte* px = x)
        {
            ushort* h = (ushort*)pw;
            float* f = (float*)px;
            var acc = Vector512<float>.Zero;
            int i = 0;
            for (; i + 16 <= cols; i += 16)
                acc += T.Load16(h + i) * Vector512.Load(f + i);
            float sum = Vector512.Sum(acc);
            for (; i < cols; i++) sum += T.ToFloat(h[i]) * f[i];
            return sum;
        }
    }

    /// <summary><see cref="Dot512{T}"/> for two activation rows, each weight read once for both and each row's operations exactly its own.</summary>
    public static void Dot2_512<T>(ReadOnlySpan<byte> w, ReadOnlySpan<byte> x0, ReadOnlySpan<byte> x1, int cols, out float y0, out float y1)
        where T : struct, IHalfReader
    {
        if (w.Length < cols * 2 || x0.Length < cols * 4 || x1.Length < cols * 4) throw new ArgumentException("row too short");
        fixed (byte* pw = w)
        fixed (byte* p0 = x0)
        fixed (byte* p1 = x1)
        {
            ushort* h = (ushort*)pw;
            float* f0 = (float*)p0, f1 = (float*)p1;
            Vector512<float> a0 = default, a1 = default;
            int i = 0;
            for (; i + 16 <= cols; i += 16)
            {
                var wi = T.Load16(h + i);
                a0 += wi * Vector512.Load(f0 + i);
                a1 += wi * Vector512.Load(f1 + i);
            }
            float s0 = Vector512.Sum(a0), s1 = Vector512.Sum(a1);
            for (; i < cols; i++)
            {
                float wi = T.ToFloat(h[i]);
                s0 += wi * f0[i];
                s1 += wi * f1[i];
            }
            (y0, y1) = (s0, s1);
        }
    }

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
