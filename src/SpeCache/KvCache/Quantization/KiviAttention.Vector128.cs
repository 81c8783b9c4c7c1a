using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using SpeCache.Quants;

namespace SpeCache.KvCache.Quantization;

/// <summary>
/// The 128-bit forms of the key-score and value kernels, in portable vector operations only (NEON on
/// ARM, SSE on x86 without AVX2), for CPUs the 256- and 512-bit kernels do not run on: there the
/// scalar references read every code with its scale and zero one at a time (AttentionBench 32768 on
/// x86: 28 s per specache step, 40x the full cache). A variable permute is not portable at this
/// width, so every width converts codes: per channel (keys) or token (values) one shift, mask and
/// conversion of 4 codes, and a multiply-add per query head.
/// </summary>
public static partial class KiviAttention
{
    [SkipLocalsInit] // every staged float is written before it is read
    static void KeyScores128<TWidth>(KiviFormat format, ReadOnlySpan<float> queries, int heads, ReadOnlySpan<byte> group, Span<float> scores, int stride)
        where TWidth : struct, ICodeWidth
    {
        int d = format.HeadDim, g = format.GroupSize;
        int channels = format.KeyWordsPerToken * format.ChannelsPerKeyWord;
        Span<float> scale = stackalloc float[channels];
        Span<float> zero = stackalloc float[d];
        GroupScalesAndZeros(format, group, scale, zero);
        Span<float> qs = stackalloc float[4 * channels];
        qs.Clear(); // padding channels: q∘s is 0 there, so their (zero) codes add nothing
        int h = 0;
        for (; h + 4 <= heads; h += 4)
        {
            for (int i = 0; i < 4; i++) StartScores128(queries.Slice((h + i) * d, d), scale[..d], zero, qs.Slice(i * channels, d), scores.Slice((h + i) * stride, g));
            ScoresByConversion128<TWidth, FourHeads>(format, qs, group, ref scores[h * stride], stride);
        }
        for (; h < heads; h++)
        {
            StartScores128(queries.Slice(h * d, d), scale[..d], zero, qs[..d], scores.Slice(h * stride, g));
            ScoresByConversion128<TWidth, OneHead>(format, qs, group, ref scores[h * stride], stride);
        }
    }

    /// <summary>One head's q∘s into <paramref name="qs"/>, and its G scores started at the bias Σ q_c z_c (by the library: once per group and head).</summary>
    static void StartScores128(ReadOnlySpan<float> q, ReadOnlySpan<float> scale, ReadOnlySpan<float> zero, Span<float> qs, Span<float> scores)
    {
        TensorPrimitives.Multiply(q, scale, qs);
        scores.Fill(TensorPrimitives.Dot(q, zero));
    }

    /// <summary>Per channel one shift, mask and conversion of 4 tokens' codes and one multiply-add per head.</summary>
    static void ScoresByConversion128<TWidth, THeads>(KiviFormat format, Span<float> qs, ReadOnlySpan<byte> group, ref float score0, int stride)
        where TWidth : struct, ICodeWidth
        where THeads : struct, IHeadCount
    {
        const int lanes = 4;
        int n = THeads.Count, g = format.GroupSize, words = format.KeyWordsPerToken;
        int perWord = format.ChannelsPerKeyWord, channels = words * perWord;
        ref float qs0 = ref MemoryMarshal.GetReference(qs);
        ref int codes = ref Unsafe.As<byte, int>(ref Unsafe.Add(ref MemoryMarshal.GetReference(group), format.KeyCodesOffset));
        var mask = Vector128.Create((1 << TWidth.Bits) - 1);
        for (int w = 0; w < words; w++)
            for (int t = 0; t < g; t += lanes)
            {
                var word = Vector128.LoadUnsafe(ref codes, (nuint)format.KeyWordIndex(t, w));
                var a0 = Vector128.LoadUnsafe(ref score0, (nuint)t);
                Vector128<float> a1 = default, a2 = default, a3 = default;
                if (n == 4)
                {
                    a1 = Vector128.LoadUnsafe(ref score0, (nuint)(stride + t));
                    a2 = Vector128.LoadUnsafe(ref score0, (nuint)(2 * stride + t));
                    a3 = Vector128.LoadUnsafe(ref score0, (nuint)(3 * stride + t));
                }
                ref float qc = ref Unsafe.Add(ref qs0, w * perWord);
                for (int j = 0; j < perWord; j++)
                {
                    var x = Vector128.ConvertToSingle(word & mask);
                    word >>>= TWidth.Bits;
                    a0 = Vector128.MultiplyAddEstimate(x, Vector128.Create(qc), a0);
                    if (n == 4)
                    {
                        a1 = Vector128.MultiplyAddEstimate(x, Vector128.Create(Unsafe.Add(ref qc, channels)), a1);
                        a2 = Vector128.MultiplyAddEstimate(x, Vector128.Create(Unsafe.Add(ref qc, 2 * channels)), a2);
                        a3 = Vector128.MultiplyAddEstimate(x, Vector128.Create(Unsafe.Add(ref qc, 3 * channels)), a3);
                    }
                    qc = ref Unsafe.Add(ref qc, 1);
                }
                a0.StoreUnsafe(ref score0, (nuint)t);
                if (n == 4)
                {
                    a1.StoreUnsafe(ref score0, (nuint)(stride + t));
                    a2.StoreUnsafe(ref score0, (nuint)(2 * stride + t));
                    a3.StoreUnsafe(ref score0, (nuint)(3 * stride + t));
                }
            }
    }

    static void AccumulateValues128<TWidth>(KiviFormat format, int heads, ReadOnlySpan<float> probabilities, int count, int stride, ReadOnlySpan<byte> values, Span<float> output)
        where TWidth : struct, ICodeWidth
    {
        if (count == 0) return;
        int d = format.HeadDim, h = 0;
        for (; h + 4 <= heads; h += 4)
            AccumulateHeads128<TWidth, FourHeads>(format, probabilities.Slice(h * stride, 3 * stride + count), count, stride, values, output.Slice(h * d, 4 * d));
        for (; h < heads; h++)
            AccumulateHeads128<TWidth, OneHead>(format, probabilities.Slice(h * stride, count), count, stride, values, output.Slice(h * d, d));
    }

    /// <summary>
    /// Per block of 16 tokens its p_t s_t staged, then per 4 channels and run the run's 2 bytes of
    /// nibbles spread one channel per lane, and per token of the run its codes shifted out, masked,
    /// converted and multiply-added per head.
    /// </summary>
    [SkipLocalsInit] // every staged float is written before it is read
    static void AccumulateHeads128<TWidth, THeads>(KiviFormat format, ReadOnlySpan<float> probabilities, int count, int stride, ReadOnlySpan<byte> values, Span<float> output)
        where TWidth : struct, ICodeWidth
        where THeads : struct, IHeadCount
    {
        const int lanes = 4, blockTokens = KiviFormat.BlockTokens;
        int heads = THeads.Count, d = format.HeadDim, gv = format.ValueGroupSize, groups = format.ValueGroupsPerToken;
        int runTokens = 4 / TWidth.Bits, runs = blockTokens / runTokens, runBytes = d / 2, headStaged = groups * blockTokens;
        Span<float> scaled = stackalloc float[heads * groups * blockTokens]; // p_t s_t, [head][group][token]
        Span<float> biases = stackalloc float[heads * groups * lanes];       // running Σ p_t z_t, [head][group][lane]
        Span<float> partial = stackalloc float[blockTokens];
        biases.Clear();
        ref float scaled0 = ref MemoryMarshal.GetReference(scaled);
        ref float bias0 = ref MemoryMarshal.GetReference(biases);
        ref float p0 = ref MemoryMarshal.GetReference(probabilities);
        ref float o = ref MemoryMarshal.GetReference(output);
        var mask = Vector128.Create((uint)((1 << TWidth.Bits) - 1));
        for (int start = 0; start < count; start += blockTokens)
        {
            ref byte block = ref Unsafe.Add(ref MemoryMarshal.GetReference(values), (nint)(start / blockTokens) * format.ValueBlockBytes);
            StageBlock128<THeads>(format, ref p0, count, stride, values, start, ref scaled0, ref bias0, partial);
            for (int grp = 0; grp < groups; grp++)
                for (int c = grp * gv; c < (grp + 1) * gv; c += lanes)
                {
                    var a0 = Vector128.LoadUnsafe(ref o, (nuint)c);
                    Vector128<float> a1 = default, a2 = default, a3 = default;
                    if (heads == 4)
                    {
                        a1 = Vector128.LoadUnsafe(ref o, (nuint)(d + c));
                        a2 = Vector128.LoadUnsafe(ref o, (nuint)(2 * d + c));
                        a3 = Vector128.LoadUnsafe(ref o, (nuint)(3 * d + c));
                    }
                    ref byte nibbles = ref Unsafe.Add(ref block, c / 2); // run 0's nibbles of channels c .. c+3
                    ref float pt = ref Unsafe.Add(ref scaled0, grp * blockTokens);
                    for (int run = 0; run < runs; run++)
                    {
                        uint w = Unsafe.ReadUnaligned<ushort>(ref Unsafe.Add(ref nibbles, run * runBytes));
                        var spread = Vector128.Create(w, w >> 4, w >> 8, w >> 12); // channel i's nibble at the bottom of lane i
                        for (int j = 0; j < runTokens; j++)
                        {
                            var code = Vector128.ConvertToSingle(((spread >>> (j * TWidth.Bits)) & mask).AsInt32());
                            a0 = Vector128.MultiplyAddEstimate(code, Vector128.Create(pt), a0);
                            if (heads == 4)
                            {
                                a1 = Vector128.MultiplyAddEstimate(code, Vector128.Create(Unsafe.Add(ref pt, headStaged)), a1);
                                a2 = Vector128.MultiplyAddEstimate(code, Vector128.Create(Unsafe.Add(ref pt, 2 * headStaged)), a2);
                                a3 = Vector128.MultiplyAddEstimate(code, Vector128.Create(Unsafe.Add(ref pt, 3 * headStaged)), a3);
                            }
                            pt = ref Unsafe.Add(ref pt, 1);
                        }
                    }
                    a0.StoreUnsafe(ref o, (nuint)c);
                    if (heads == 4)
                    {
                        a1.StoreUnsafe(ref o, (nuint)(d + c));
                        a2.StoreUnsafe(ref o, (nuint)(2 * d + c));
                        a3.StoreUnsafe(ref o, (nuint)(3 * d + c));
                    }
                }
        }

        // Σ_t p_t z_t of each head and group, added to each of the group's channels.
        for (int i = 0; i < heads; i++)
            for (int grp = 0; grp < groups; grp++)
            {
                var bias = Vector128.Create(Vector128.Sum(Vector128.LoadUnsafe(ref bias0, (nuint)((i * groups + grp) * lanes))));
                for (int c = grp * gv; c < (grp + 1) * gv; c += lanes)
                    (Vector128.LoadUnsafe(ref o, (nuint)(i * d + c)) + bias).StoreUnsafe(ref o, (nuint)(i * d + c));
            }
    }

    /// <summary>Block <paramref name="start"/>/16's p_t s_t into <paramref name="scaled"/> ([head][group][token]) and its p_t z_t added to the running <paramref name="bias"/> ([head][group][4 lanes]).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void StageBlock128<THeads>(KiviFormat format, ref float p0, int count, int stride, ReadOnlySpan<byte> values, int start, ref float scaled, ref float bias, Span<float> partial)
        where THeads : struct, IHeadCount
    {
        const int lanes = 4, blockTokens = KiviFormat.BlockTokens;
        int heads = THeads.Count, groups = format.ValueGroupsPerToken;
        int n = Math.Min(blockTokens, count - start);
        ref ushort halves = ref Unsafe.As<byte, ushort>(ref Unsafe.Add(ref MemoryMarshal.GetReference(values), (nint)start / blockTokens * format.ValueBlockBytes + format.ValueScalesOffset));
        for (int grp = 0; grp < groups; grp++)
            for (int quarter = 0; quarter < blockTokens; quarter += lanes)
            {
                // A part-filled block's empty lanes may hold anything: their scales, zeros and probabilities count as 0.
                var valid = Vector128.LessThan(Vector128<int>.Indices + Vector128.Create(quarter), Vector128.Create(n)).AsSingle();
                var s = HalvesToSingle128(ref halves, grp * blockTokens + quarter) & valid;
                var z = HalvesToSingle128(ref halves, (groups + grp) * blockTokens + quarter) & valid;
                for (int i = 0; i < heads; i++)
                {
                    ref float p = ref Unsafe.Add(ref p0, i * stride + start + quarter);
                    if (quarter + lanes > n)
                    {
                        for (int t = 0; t < lanes; t++) partial[t] = quarter + t < n ? Unsafe.Add(ref p, t) : 0;
                        p = ref MemoryMarshal.GetReference(partial);
                    }
                    var pv = Vector128.LoadUnsafe(ref p);
                    (pv * s).StoreUnsafe(ref scaled, (nuint)((i * groups + grp) * blockTokens + quarter));
                    ref float b = ref Unsafe.Add(ref bias, (i * groups + grp) * lanes);
                    Vector128.MultiplyAddEstimate(pv, z, Vector128.LoadUnsafe(ref b)).StoreUnsafe(ref b);
                }
            }
    }

    /// <summary>4 halves at <paramref name="at"/> to floats (8 bytes read, none past them).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Vector128<float> HalvesToSingle128(ref ushort halves, int at) =>
        QuantMath.HalfToSingle(Vector128.WidenLower(Vector64.LoadUnsafe(ref halves, (nuint)at).ToVector128Unsafe()));
}
