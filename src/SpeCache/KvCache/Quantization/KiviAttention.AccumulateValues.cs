using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using SpeCache.Quants;

namespace SpeCache.KvCache.Quantization;

public static partial class KiviAttention
{
    /// <summary>Tokens whose scaled probabilities are staged on the stack at a time.</summary>
    const int ValueBlock = 64;

    /// <summary>
    /// Adds Σ_t p_h,t v_t into each query head's row of <paramref name="output"/> (heads × HeadDim),
    /// v_t the dequantized value of the t-th of n packed value tokens laid end to end in
    /// <paramref name="tokens"/>; <paramref name="probabilities"/> is heads × n, head-major. The query
    /// heads are those sharing this KV head (GQA), so the codes are read and expanded once for all.
    /// </summary>
    /// <remarks>
    /// With v_t,c = z_t,g + s_t,g code_t,c (g the channel's group): o_c += (p_t s_t,g) code_t,c + p_t z_t,g.
    /// The products p_t s_t,g are formed once per token and group; the p_t z_t,g terms only depend on
    /// the group, so they are summed over all tokens first and added to each channel once at the end.
    /// </remarks>
    public static void AccumulateValues(KiviFormat format, ReadOnlySpan<float> probabilities, ReadOnlySpan<byte> tokens, Span<float> output)
    {
        int heads = CheckAccumulateValues(format, probabilities, tokens, output);
        if (!KiviCodes.VectorPath || !format.Vectorizable)
        {
            AccumulateValuesScalar(format, probabilities, tokens, output);
            return;
        }
        switch (format.Bits)
        {
            case 1: AccumulateValuesVector<OneBit>(format, heads, probabilities, tokens, output); break;
            case 2: AccumulateValuesVector<TwoBits>(format, heads, probabilities, tokens, output); break;
            default: AccumulateValuesVector<FourBits>(format, heads, probabilities, tokens, output); break;
        }
    }

    /// <summary>Scalar reference of <see cref="AccumulateValues"/>.</summary>
    public static void AccumulateValuesScalar(KiviFormat format, ReadOnlySpan<float> probabilities, ReadOnlySpan<byte> tokens, Span<float> output)
    {
        int heads = CheckAccumulateValues(format, probabilities, tokens, output);
        int d = format.HeadDim, gv = format.ValueGroupSize, groups = format.ValueGroupsPerToken, stride = format.ValueTokenBytes;
        int n = probabilities.Length / heads;
        for (int h = 0; h < heads; h++)
            for (int t = 0; t < n; t++)
            {
                float p = probabilities[h * n + t];
                var token = tokens.Slice(t * stride, stride);
                var codes = token[..format.ValueCodeBytes];
                var scales = MemoryMarshal.Cast<byte, Half>(token.Slice(format.ValueCodeBytes, 2 * groups));
                var zeros = MemoryMarshal.Cast<byte, Half>(token.Slice(format.ValueCodeBytes + 2 * groups, 2 * groups));
                for (int c = 0; c < d; c++)
                {
                    float ps = p * (float)scales[c / gv], pz = p * (float)zeros[c / gv];
                    output[h * d + c] += MathF.FusedMultiplyAdd(ps, KiviCodes.Read(codes, c, format.Bits), pz);
                }
            }
    }

    static int CheckAccumulateValues(KiviFormat format, ReadOnlySpan<float> probabilities, ReadOnlySpan<byte> tokens, Span<float> output)
    {
        if (format.HeadDim == 0) throw new ArgumentException("the KIVI format is uninitialized (default)", nameof(format));
        int heads = output.Length / format.HeadDim;
        if (heads == 0 || output.Length != heads * format.HeadDim)
            throw new ArgumentException($"the output must be a whole number of {format.HeadDim}-float heads, not {output.Length} floats", nameof(output));
        if (probabilities.Length % heads != 0)
            throw new ArgumentException($"{probabilities.Length} probabilities do not split into {heads} heads", nameof(probabilities));
        long n = probabilities.Length / heads;
        if (tokens.Length < n * format.ValueTokenBytes)
            throw new ArgumentException($"{n} value tokens are {n * format.ValueTokenBytes} bytes, got {tokens.Length}", nameof(tokens));
        return heads;
    }

    static void AccumulateValuesVector<TWidth>(KiviFormat format, int heads, ReadOnlySpan<float> probabilities, ReadOnlySpan<byte> tokens, Span<float> output)
        where TWidth : struct, ICodeWidth
    {
        int d = format.HeadDim, n = probabilities.Length / heads;
        int h = 0;
        for (; h + 4 <= heads; h += 4)
            AccumulateValuesFourHeads<TWidth>(format, probabilities.Slice(h * n, 4 * n), tokens, output.Slice(h * d, 4 * d));
        for (; h < heads; h++)
            AccumulateValuesOneHead<TWidth>(format, probabilities.Slice(h * n, n), tokens, output.Slice(h * d, d));
    }

    /// <summary>
    /// Stages p_h,t s_t,g for <paramref name="count"/> (at most <see cref="ValueBlock"/>) tokens from
    /// <paramref name="start"/>, laid out [head][group][token] so the token loops read it with stride 1,
    /// and adds Σ_t p_h,t z_t,g into <paramref name="bias"/> [head][group]. Scales and zeros are first
    /// turned around to [group][token] so the per-head work is whole vectors of 16 tokens.
    /// </summary>
    static unsafe void StageValueScales(KiviFormat format, ReadOnlySpan<float> probabilities, int heads, int start, int count, ref byte first, Span<float> scaled, Span<float> bias)
    {
        int groups = format.ValueGroupsPerToken, stride = format.ValueTokenBytes, n = probabilities.Length / heads;
        Span<float> s = stackalloc float[groups * ValueBlock];
        Span<float> z = stackalloc float[groups * ValueBlock];
        ref float s0 = ref MemoryMarshal.GetReference(s);
        ref float z0 = ref MemoryMarshal.GetReference(z);
        int t0 = 0;
        if (Avx2.IsSupported)
        {
            // 8 tokens at a time: one gather of the 32-bit words holding their scale (low half) or
            // zero (high half: the word starts 2 bytes early, so it never reads past the token),
            // then one vector conversion, instead of 16 scalar ones: the scalar staging was 11 % of
            // a 32K-token specache decode step.
            var tokenOffsets = Vector256.Create(0, 1, 2, 3, 4, 5, 6, 7) * stride;
            fixed (byte* firstByte = &first)
                for (; t0 + 8 <= count; t0 += 8)
                {
                    var offsets = tokenOffsets + Vector256.Create(t0 * stride + format.ValueCodeBytes);
                    for (int grp = 0; grp < groups; grp++)
                    {
                        var scaleWords = Avx2.GatherVector256((int*)firstByte, offsets + Vector256.Create(2 * grp), 1).AsUInt32();
                        var zeroWords = Avx2.GatherVector256((int*)firstByte, offsets + Vector256.Create(2 * (groups + grp) - 2), 1).AsUInt32();
                        QuantMath.HalfToSingle(scaleWords & Vector256.Create(0xFFFFu)).StoreUnsafe(ref s0, (nuint)(grp * ValueBlock + t0));
                        QuantMath.HalfToSingle(zeroWords >>> 16).StoreUnsafe(ref z0, (nuint)(grp * ValueBlock + t0));
                    }
                }
        }
        for (int t = t0; t < count; t++)
        {
            ref byte header = ref Unsafe.Add(ref first, t * stride + format.ValueCodeBytes);
            for (int grp = 0; grp < groups; grp++)
            {
                Unsafe.Add(ref s0, grp * ValueBlock + t) = KiviCodes.HalfToSingle(Unsafe.ReadUnaligned<ushort>(ref Unsafe.Add(ref header, 2 * grp)));
                Unsafe.Add(ref z0, grp * ValueBlock + t) = KiviCodes.HalfToSingle(Unsafe.ReadUnaligned<ushort>(ref Unsafe.Add(ref header, 2 * (groups + grp))));
            }
        }
        int whole = count & ~(KiviFormat.Lanes - 1);
        for (int i = 0; i < heads; i++)
        {
            ref float p = ref Unsafe.Add(ref MemoryMarshal.GetReference(probabilities), i * n + start);
            for (int grp = 0; grp < groups; grp++)
            {
                ref float sg = ref Unsafe.Add(ref s0, grp * ValueBlock);
                ref float zg = ref Unsafe.Add(ref z0, grp * ValueBlock);
                ref float out0 = ref scaled[(i * groups + grp) * ValueBlock];
                var pz = Vector512<float>.Zero;
                int t = 0;
                for (; t < whole; t += KiviFormat.Lanes)
                {
                    var pt = Vector512.LoadUnsafe(ref p, (nuint)t);
                    (pt * Vector512.LoadUnsafe(ref sg, (nuint)t)).StoreUnsafe(ref out0, (nuint)t);
                    pz = Vector512.FusedMultiplyAdd(pt, Vector512.LoadUnsafe(ref zg, (nuint)t), pz);
                }
                float sum = Vector512.Sum(pz);
                for (; t < count; t++)
                {
                    Unsafe.Add(ref out0, t) = Unsafe.Add(ref p, t) * Unsafe.Add(ref sg, t);
                    sum += Unsafe.Add(ref p, t) * Unsafe.Add(ref zg, t);
                }
                bias[i * groups + grp] += sum;
            }
        }
    }

    static void AddValueBias(KiviFormat format, Span<float> output, ReadOnlySpan<float> bias)
    {
        int groups = format.ValueGroupsPerToken, gv = format.ValueGroupSize;
        ref float o = ref MemoryMarshal.GetReference(output);
        for (int c = 0; c < output.Length; c += KiviFormat.Lanes) // gv is a multiple of 16, so a chunk is in one group
        {
            int head = c / format.HeadDim, grp = c % format.HeadDim / gv;
            (Vector512.LoadUnsafe(ref o, (nuint)c) + Vector512.Create(bias[head * groups + grp])).StoreUnsafe(ref o, (nuint)c);
        }
    }

    static void AccumulateValuesOneHead<TWidth>(KiviFormat format, ReadOnlySpan<float> probabilities, ReadOnlySpan<byte> tokens, Span<float> output)
        where TWidth : struct, ICodeWidth
    {
        int d = format.HeadDim, gv = format.ValueGroupSize, groups = format.ValueGroupsPerToken, stride = format.ValueTokenBytes;
        int chunkBytes = 2 * TWidth.Bits; // 16 channels of one token
        Span<float> bias = stackalloc float[groups];
        bias.Clear();
        Span<float> scaled = stackalloc float[ValueBlock * groups];
        ref float o = ref MemoryMarshal.GetReference(output);

        for (int start = 0; start < probabilities.Length; start += ValueBlock)
        {
            int n = Math.Min(ValueBlock, probabilities.Length - start);
            ref byte first = ref Unsafe.Add(ref MemoryMarshal.GetReference(tokens), start * stride);
            StageValueScales(format, probabilities, 1, start, n, ref first, scaled, bias);
            // Channel chunk outer, token inner: the 16 outputs of a chunk stay in registers over the
            // whole block, in two chains (even and odd tokens) so FMA latency is hidden.
            for (int c = 0; c < d; c += KiviFormat.Lanes)
            {
                ref float ps = ref Unsafe.Add(ref MemoryMarshal.GetReference(scaled), c / gv * ValueBlock); // token t at t
                ref byte chunk = ref Unsafe.Add(ref first, c / KiviFormat.Lanes * chunkBytes);
                Vector512<float> even = default, odd = default;
                int t = 0;
                for (; t + 2 <= n; t += 2)
                {
                    even = Vector512.FusedMultiplyAdd(KiviCodes.Expand16<TWidth>(ref Unsafe.Add(ref chunk, t * stride)), Vector512.Create(Unsafe.Add(ref ps, t)), even);
                    odd = Vector512.FusedMultiplyAdd(KiviCodes.Expand16<TWidth>(ref Unsafe.Add(ref chunk, (t + 1) * stride)), Vector512.Create(Unsafe.Add(ref ps, t + 1)), odd);
                }
                if (t < n)
                    even = Vector512.FusedMultiplyAdd(KiviCodes.Expand16<TWidth>(ref Unsafe.Add(ref chunk, t * stride)), Vector512.Create(Unsafe.Add(ref ps, t)), even);
                (Vector512.LoadUnsafe(ref o, (nuint)c) + (even + odd)).StoreUnsafe(ref o, (nuint)c);
            }
        }
        AddValueBias(format, output, bias);
    }

    /// <summary>Four query heads over the same tokens: each 16 codes are expanded once and feed four FMA chains.</summary>
    static void AccumulateValuesFourHeads<TWidth>(KiviFormat format, ReadOnlySpan<float> probabilities, ReadOnlySpan<byte> tokens, Span<float> output)
        where TWidth : struct, ICodeWidth
    {
        int d = format.HeadDim, gv = format.ValueGroupSize, groups = format.ValueGroupsPerToken, stride = format.ValueTokenBytes;
        int chunkBytes = 2 * TWidth.Bits;
        int count = probabilities.Length / 4;
        Span<float> bias = stackalloc float[4 * groups];
        bias.Clear();
        Span<float> scaled = stackalloc float[ValueBlock * 4 * groups];
        ref float o = ref MemoryMarshal.GetReference(output);
        int headStep = groups * ValueBlock; // staged floats per head

        for (int start = 0; start < count; start += ValueBlock)
        {
            int n = Math.Min(ValueBlock, count - start);
            ref byte first = ref Unsafe.Add(ref MemoryMarshal.GetReference(tokens), start * stride);
            StageValueScales(format, probabilities, 4, start, n, ref first, scaled, bias);
            for (int c = 0; c < d; c += KiviFormat.Lanes)
            {
                ref float p0 = ref Unsafe.Add(ref MemoryMarshal.GetReference(scaled), c / gv * ValueBlock); // head i, token t at i * headStep + t
                ref float p1 = ref Unsafe.Add(ref p0, headStep);
                ref float p2 = ref Unsafe.Add(ref p0, 2 * headStep);
                ref float p3 = ref Unsafe.Add(ref p0, 3 * headStep);
                ref byte chunk = ref Unsafe.Add(ref first, c / KiviFormat.Lanes * chunkBytes);
                Vector512<float> a0 = default, a1 = default, a2 = default, a3 = default;
                for (int t = 0; t < n; t++)
                {
                    var x = KiviCodes.Expand16<TWidth>(ref Unsafe.Add(ref chunk, t * stride));
                    a0 = Vector512.FusedMultiplyAdd(x, Vector512.Create(Unsafe.Add(ref p0, t)), a0);
                    a1 = Vector512.FusedMultiplyAdd(x, Vector512.Create(Unsafe.Add(ref p1, t)), a1);
                    a2 = Vector512.FusedMultiplyAdd(x, Vector512.Create(Unsafe.Add(ref p2, t)), a2);
                    a3 = Vector512.FusedMultiplyAdd(x, Vector512.Create(Unsafe.Add(ref p3, t)), a3);
                }
                (Vector512.LoadUnsafe(ref o, (nuint)c) + a0).StoreUnsafe(ref o, (nuint)c);
                (Vector512.LoadUnsafe(ref o, (nuint)(d + c)) + a1).StoreUnsafe(ref o, (nuint)(d + c));
                (Vector512.LoadUnsafe(ref o, (nuint)(2 * d + c)) + a2).StoreUnsafe(ref o, (nuint)(2 * d + c));
                (Vector512.LoadUnsafe(ref o, (nuint)(3 * d + c)) + a3).StoreUnsafe(ref o, (nuint)(3 * d + c));
            }
        }
        AddValueBias(format, output, bias);
    }
}
