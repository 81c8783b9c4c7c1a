using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using SpeCache.Quants;

namespace SpeCache.KvCache.Quantization;

/// <summary>
/// Attention kernels that read KIVI's packed codes directly: scores against a key group, and the
/// probability-weighted sum of value tokens. No 16-bit (or float) copy of the cache is ever made.
/// </summary>
public static partial class KiviAttention
{
    /// <summary>
    /// Raw scores q·k_t (no 1/sqrt(d) scale) of every query head in <paramref name="queries"/>
    /// (heads × HeadDim, the query heads that share this KV head) against the G tokens of one packed
    /// key group; <paramref name="scores"/> gets heads × G, head-major.
    /// </summary>
    /// <remarks>
    /// With k_t,c = z_c + s_c code_t,c: q·k_t = Σ_c (q_c s_c) code_t,c + Σ_c q_c z_c. So per group and
    /// head, q∘s and the bias Σ q_c z_c are computed once, and per token only the codes are read.
    /// 1 bit takes the same convert-and-FMA path as 2 and 4: written as masked adds
    /// (<c>ConditionalSelect(bits, acc + qs, acc)</c>) the .NET 10 JIT turns the mask into a vector
    /// and blends (vpmovm2d + vpternlogd per head) instead of one masked vaddps, and that measured
    /// slower (16.5 against 12.5 ns per token, 4 heads, G=32).
    /// </remarks>
    public static void KeyScores(KiviFormat format, ReadOnlySpan<float> queries, ReadOnlySpan<byte> group, Span<float> scores)
    {
        int heads = CheckKeyScores(format, queries, group, scores);
        if (!KiviCodes.VectorPath || !format.Vectorizable)
        {
            KeyScoresScalar(format, queries, group, scores);
            return;
        }
        switch (format.Bits)
        {
            case 1: KeyScoresVector<OneBit>(format, queries, heads, group, scores); break;
            case 2: KeyScoresVector<TwoBits>(format, queries, heads, group, scores); break;
            default: KeyScoresVector<FourBits>(format, queries, heads, group, scores); break;
        }
    }

    /// <summary>Scalar reference of <see cref="KeyScores"/>: the same sum, one token and channel at a time.</summary>
    public static void KeyScoresScalar(KiviFormat format, ReadOnlySpan<float> queries, ReadOnlySpan<byte> group, Span<float> scores)
    {
        int heads = CheckKeyScores(format, queries, group, scores);
        int d = format.HeadDim, g = format.GroupSize, bits = format.Bits;
        var scales = MemoryMarshal.Cast<byte, Half>(group[..(2 * d)]);
        var zeros = MemoryMarshal.Cast<byte, Half>(group.Slice(2 * d, 2 * d));
        var codes = group[format.KeyCodesOffset..];
        for (int h = 0; h < heads; h++)
        {
            var q = queries.Slice(h * d, d);
            float bias = 0;
            for (int c = 0; c < d; c++) bias += q[c] * (float)zeros[c];
            for (int t = 0; t < g; t++)
            {
                float sum = 0;
                for (int c = 0; c < d; c++)
                    sum = MathF.FusedMultiplyAdd(q[c] * (float)scales[c], KiviCodes.Read(codes.Slice(c * format.KeyChannelBytes), t, bits), sum);
                scores[h * g + t] = sum + bias;
            }
        }
    }

    static int CheckKeyScores(KiviFormat format, ReadOnlySpan<float> queries, ReadOnlySpan<byte> group, Span<float> scores)
    {
        if (format.HeadDim == 0) throw new ArgumentException("the KIVI format is uninitialized (default)", nameof(format));
        int heads = queries.Length / format.HeadDim;
        if (heads == 0 || queries.Length != heads * format.HeadDim)
            throw new ArgumentException($"queries must be a whole number of {format.HeadDim}-float heads, not {queries.Length} floats", nameof(queries));
        if (group.Length < format.KeyGroupBytes)
            throw new ArgumentException($"a key group is {format.KeyGroupBytes} bytes, got {group.Length}", nameof(group));
        if (scores.Length < heads * format.GroupSize)
            throw new ArgumentException($"{heads} heads x {format.GroupSize} tokens need {heads * format.GroupSize} scores", nameof(scores));
        return heads;
    }

    [SkipLocalsInit] // every staged float is written before it is read; zeroing them cost a pass per group
    static unsafe void KeyScoresVector<TWidth>(KiviFormat format, ReadOnlySpan<float> queries, int heads, ReadOnlySpan<byte> group, Span<float> scores)
        where TWidth : struct, ICodeWidth
    {
        int d = format.HeadDim, g = format.GroupSize;
        Span<float> scale = stackalloc float[d];
        Span<float> zero = stackalloc float[d];
        // The group's scales and zeros by the full cache's inlined half conversion: two library
        // calls per 64-token group were 2 % of a 32K-token specache step.
        fixed (byte* halves = group)
        fixed (float* s = scale)
        fixed (float* z = zero)
        {
            F16.ToSingle((ushort*)halves, s, d);
            F16.ToSingle((ushort*)halves + d, z, d);
        }
        Span<float> qs = stackalloc float[4 * d]; // q∘s of up to four heads
        ref byte codes = ref Unsafe.Add(ref MemoryMarshal.GetReference(group), format.KeyCodesOffset);
        ref float score = ref MemoryMarshal.GetReference(scores);
        int channelBytes = format.KeyChannelBytes;
        int chunkBytes = 2 * TWidth.Bits; // 16 tokens of one channel

        int h = 0;
        // Four heads at a time: each channel's 16 codes are expanded once and feed four independent
        // FMA chains, which also hides the FMA latency. GQA models have 2 to 8 query heads per KV head.
        for (; h + 4 <= heads; h += 4)
        {
            // q∘s and Σ q z of the four heads in one pass over the channels: eight small library calls
            // per group cost as much as the scores of a dozen tokens.
            ref float query = ref Unsafe.Add(ref MemoryMarshal.GetReference(queries), h * d);
            ref float qs0 = ref MemoryMarshal.GetReference(qs);
            Vector512<float> z0 = default, z1 = default, z2 = default, z3 = default;
            for (int c = 0; c < d; c += KiviFormat.Lanes)
            {
                var s = Vector512.LoadUnsafe(ref MemoryMarshal.GetReference(scale), (nuint)c);
                var z = Vector512.LoadUnsafe(ref MemoryMarshal.GetReference(zero), (nuint)c);
                var x0 = Vector512.LoadUnsafe(ref query, (nuint)c);
                var x1 = Vector512.LoadUnsafe(ref query, (nuint)(d + c));
                var x2 = Vector512.LoadUnsafe(ref query, (nuint)(2 * d + c));
                var x3 = Vector512.LoadUnsafe(ref query, (nuint)(3 * d + c));
                (x0 * s).StoreUnsafe(ref qs0, (nuint)c);
                (x1 * s).StoreUnsafe(ref qs0, (nuint)(d + c));
                (x2 * s).StoreUnsafe(ref qs0, (nuint)(2 * d + c));
                (x3 * s).StoreUnsafe(ref qs0, (nuint)(3 * d + c));
                z0 = Vector512.FusedMultiplyAdd(x0, z, z0);
                z1 = Vector512.FusedMultiplyAdd(x1, z, z1);
                z2 = Vector512.FusedMultiplyAdd(x2, z, z2);
                z3 = Vector512.FusedMultiplyAdd(x3, z, z3);
            }
            var bias0 = Vector512.Create(Vector512.Sum(z0));
            var bias1 = Vector512.Create(Vector512.Sum(z1));
            var bias2 = Vector512.Create(Vector512.Sum(z2));
            var bias3 = Vector512.Create(Vector512.Sum(z3));
            ref float q0 = ref MemoryMarshal.GetReference(qs);
            ref float q1 = ref Unsafe.Add(ref q0, d);
            ref float q2 = ref Unsafe.Add(ref q0, 2 * d);
            ref float q3 = ref Unsafe.Add(ref q0, 3 * d);
            for (int k = 0; k < g; k += KiviFormat.Lanes)
            {
                ref byte chunk = ref Unsafe.Add(ref codes, k / KiviFormat.Lanes * chunkBytes);
                Vector512<float> a0 = default, a1 = default, a2 = default, a3 = default;
                for (int c = 0; c < d; c++)
                {
                    var x = KiviCodes.Expand16<TWidth>(ref Unsafe.Add(ref chunk, c * channelBytes));
                    a0 = Vector512.FusedMultiplyAdd(x, Vector512.Create(Unsafe.Add(ref q0, c)), a0);
                    a1 = Vector512.FusedMultiplyAdd(x, Vector512.Create(Unsafe.Add(ref q1, c)), a1);
                    a2 = Vector512.FusedMultiplyAdd(x, Vector512.Create(Unsafe.Add(ref q2, c)), a2);
                    a3 = Vector512.FusedMultiplyAdd(x, Vector512.Create(Unsafe.Add(ref q3, c)), a3);
                }
                (a0 + bias0).StoreUnsafe(ref score, (nuint)(h * g + k));
                (a1 + bias1).StoreUnsafe(ref score, (nuint)((h + 1) * g + k));
                (a2 + bias2).StoreUnsafe(ref score, (nuint)((h + 2) * g + k));
                (a3 + bias3).StoreUnsafe(ref score, (nuint)((h + 3) * g + k));
            }
        }
        // Remaining heads one at a time, with four chains over channels c mod 4 so FMA latency is hidden.
        for (; h < heads; h++)
        {
            var q = qs[..d];
            TensorPrimitives.Multiply(queries.Slice(h * d, d), scale, q);
            var bias = Vector512.Create(TensorPrimitives.Dot(queries.Slice(h * d, d), zero));
            ref float q0 = ref MemoryMarshal.GetReference(q);
            for (int k = 0; k < g; k += KiviFormat.Lanes)
            {
                ref byte chunk = ref Unsafe.Add(ref codes, k / KiviFormat.Lanes * chunkBytes);
                Vector512<float> a0 = default, a1 = default, a2 = default, a3 = default;
                for (int c = 0; c < d; c += 4) // d is a multiple of 16
                {
                    a0 = Vector512.FusedMultiplyAdd(KiviCodes.Expand16<TWidth>(ref Unsafe.Add(ref chunk, c * channelBytes)), Vector512.Create(Unsafe.Add(ref q0, c)), a0);
                    a1 = Vector512.FusedMultiplyAdd(KiviCodes.Expand16<TWidth>(ref Unsafe.Add(ref chunk, (c + 1) * channelBytes)), Vector512.Create(Unsafe.Add(ref q0, c + 1)), a1);
                    a2 = Vector512.FusedMultiplyAdd(KiviCodes.Expand16<TWidth>(ref Unsafe.Add(ref chunk, (c + 2) * channelBytes)), Vector512.Create(Unsafe.Add(ref q0, c + 2)), a2);
                    a3 = Vector512.FusedMultiplyAdd(KiviCodes.Expand16<TWidth>(ref Unsafe.Add(ref chunk, (c + 3) * channelBytes)), Vector512.Create(Unsafe.Add(ref q0, c + 3)), a3);
                }
                ((a0 + a1) + (a2 + a3) + bias).StoreUnsafe(ref score, (nuint)(h * g + k));
            }
        }
    }
}
