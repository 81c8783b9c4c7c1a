using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using SpeCache.Quants;

namespace SpeCache.KvCache.Quantization;

/// <summary>
/// The 256-bit (AVX2 + FMA) forms of the key-score and value kernels, for CPUs without AVX-512
/// (most desktop and laptop Intel parts, Zen 1-3): the scalar references they fell back to made a
/// 32K-token specache decode step 40x slower than the full cache (AttentionBench 32768 5: 27.9 s
/// against 0.71 s per step). Same layouts as the 512-bit kernels, and the same sums but for 1-bit
/// keys and values of four or more heads, with two differences that come from <c>vpermps</c> indexing only 8 lanes:
/// <list type="bullet">
/// <item>1-bit key scores are integer sums of q∘s rounded to 6 bits, looked up in byte tables of 4
/// channels, 32 tokens a <c>vpshufb</c> (KiviAttention.OneBitKeys256.cs), not lookups in float tables
/// of 3 channels (8 entries), which took a permute and an add per 3 channels, 8 tokens and head.</item>
/// <item>The 1-bit value kernel looks each pair of tokens up in a 4-entry float table, 16 bytes,
/// with <c>vpshufb</c> (see <see cref="AddOneBitByPairTables256"/>); with four or eight query heads
/// (GQA) each token's weight is rounded to 6 bits per span of 64 tokens, and a run of 4 tokens has a
/// byte table of their sums, so a lookup covers 16 channels and 4 tokens instead of 8 and 2
/// (KiviAttention.OneBitValues256.cs). At 2 and 4 bits the value
/// kernel converts codes, as the key kernel does: a permute per 2 or 1 tokens saved nothing.</item>
/// </list>
/// </summary>
public static partial class KiviAttention
{
    /// <summary>2- and 4-bit key scores by conversion of the codes (1 bit takes <see cref="OneBitKeyScores256"/>).</summary>
    [SkipLocalsInit] // every staged float is written before it is read
    static unsafe void KeyScores256<TWidth>(KiviFormat format, ReadOnlySpan<float> queries, int heads, ReadOnlySpan<byte> group, Span<float> scores, int stride)
        where TWidth : struct, ICodeWidth
    {
        int d = format.HeadDim, g = format.GroupSize;
        int channels = format.KeyWordsPerToken * format.ChannelsPerKeyWord;
        Span<float> scale = stackalloc float[channels];
        Span<float> zero = stackalloc float[d];
        GroupScalesAndZeros(format, group, scale, zero);
        Span<float> qs = stackalloc float[4 * channels];
        int h = 0;
        // The conversion shares each channel's codes between four heads; the rest one at a time.
        for (; h + 4 <= heads; h += 4)
        {
            StartScores256(format, queries.Slice(h * d, 4 * d), 4, scale, zero, qs, ref scores[h * stride], stride);
            ScoresByConversion256<TWidth, FourHeads>(format, qs, group, ref scores[h * stride], stride);
        }
        for (; h < heads; h++)
        {
            StartScores256(format, queries.Slice(h * d, d), 1, scale, zero, qs, ref scores[h * stride], stride);
            ScoresByConversion256<TWidth, OneHead>(format, qs, group, ref scores[h * stride], stride);
        }
    }

    /// <summary>q∘s of <paramref name="heads"/> query heads into <paramref name="qs"/> (rows of the padded channel count) and each head's G scores started at its bias Σ q_c z_c.</summary>
    static void StartScores256(KiviFormat format, ReadOnlySpan<float> queries, int heads, ReadOnlySpan<float> scale, ReadOnlySpan<float> zero,
        Span<float> qs, ref float score0, int stride)
    {
        const int lanes = 8;
        int d = format.HeadDim, g = format.GroupSize, channels = format.KeyWordsPerToken * format.ChannelsPerKeyWord;
        ref float s0 = ref MemoryMarshal.GetReference(scale);
        ref float z0 = ref MemoryMarshal.GetReference(zero);
        for (int i = 0; i < heads; i++)
        {
            ref float q = ref Unsafe.Add(ref MemoryMarshal.GetReference(queries), i * d);
            ref float qsi = ref Unsafe.Add(ref MemoryMarshal.GetReference(qs), i * channels);
            var bias = Vector256<float>.Zero;
            for (int c = 0; c < d; c += lanes)
            {
                var x = Vector256.LoadUnsafe(ref q, (nuint)c);
                (x * Vector256.LoadUnsafe(ref s0, (nuint)c)).StoreUnsafe(ref qsi, (nuint)c);
                bias = Vector256.FusedMultiplyAdd(x, Vector256.LoadUnsafe(ref z0, (nuint)c), bias);
            }
            for (int c = d; c < channels; c += lanes) Vector256<float>.Zero.StoreUnsafe(ref qsi, (nuint)c);
            var start = Vector256.Create(Vector256.Sum(bias));
            for (int t = 0; t < g; t += lanes) start.StoreUnsafe(ref score0, (nuint)(i * stride + t));
        }
    }

    /// <summary>2 and 4 bits: per channel one shift, mask and conversion of 8 tokens' codes and one multiply-add per head, as the 512-bit kernel.</summary>
    static void ScoresByConversion256<TWidth, THeads>(KiviFormat format, Span<float> qs, ReadOnlySpan<byte> group, ref float score0, int stride)
        where TWidth : struct, ICodeWidth
        where THeads : struct, IHeadCount
    {
        int n = THeads.Count, g = format.GroupSize, words = format.KeyWordsPerToken;
        int perWord = format.ChannelsPerKeyWord, channels = words * perWord;
        ref float qs0 = ref MemoryMarshal.GetReference(qs);
        ref int codes = ref Unsafe.As<byte, int>(ref Unsafe.Add(ref MemoryMarshal.GetReference(group), format.KeyCodesOffset));
        var mask = Vector256.Create((1 << TWidth.Bits) - 1);
        for (int w = 0; w < words; w++)
            for (int t = 0; t < g; t += 8)
            {
                var word = Vector256.LoadUnsafe(ref codes, (nuint)format.KeyWordIndex(t, w));
                var a0 = Vector256.LoadUnsafe(ref score0, (nuint)t);
                Vector256<float> a1 = default, a2 = default, a3 = default;
                if (n == 4)
                {
                    a1 = Vector256.LoadUnsafe(ref score0, (nuint)(stride + t));
                    a2 = Vector256.LoadUnsafe(ref score0, (nuint)(2 * stride + t));
                    a3 = Vector256.LoadUnsafe(ref score0, (nuint)(3 * stride + t));
                }
                ref float qc = ref Unsafe.Add(ref qs0, w * perWord);
                for (int j = 0; j < perWord; j++)
                {
                    var x = Vector256.ConvertToSingle(word & mask);
                    word >>>= TWidth.Bits;
                    a0 = Vector256.FusedMultiplyAdd(x, Vector256.Create(qc), a0);
                    if (n == 4)
                    {
                        a1 = Vector256.FusedMultiplyAdd(x, Vector256.Create(Unsafe.Add(ref qc, channels)), a1);
                        a2 = Vector256.FusedMultiplyAdd(x, Vector256.Create(Unsafe.Add(ref qc, 2 * channels)), a2);
                        a3 = Vector256.FusedMultiplyAdd(x, Vector256.Create(Unsafe.Add(ref qc, 3 * channels)), a3);
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

    static void AccumulateValues256<TWidth>(KiviFormat format, int heads, ReadOnlySpan<float> probabilities, int count, int stride, ReadOnlySpan<byte> values, Span<float> output)
        where TWidth : struct, ICodeWidth
    {
        if (count == 0) return;
        int d = format.HeadDim, h = 0;
        // At 1 bit, eight heads (a decode step's real and speculative rows of a GQA group of 4) share each run's byte controls.
        if (TWidth.Bits == 1)
            for (; h + 8 <= heads; h += 8)
                AccumulateHeads256<TWidth, EightHeads>(format, probabilities.Slice(h * stride, 7 * stride + count), count, stride, values, output.Slice(h * d, 8 * d));
        for (; h + 4 <= heads; h += 4)
            AccumulateHeads256<TWidth, FourHeads>(format, probabilities.Slice(h * stride, 3 * stride + count), count, stride, values, output.Slice(h * d, 4 * d));
        for (; h < heads; h++)
            AccumulateHeads256<TWidth, OneHead>(format, probabilities.Slice(h * stride, count), count, stride, values, output.Slice(h * d, d));
    }

    /// <summary>
    /// Per block of 16 tokens its p_t s_t staged, then per channel group the codes' part: by tables
    /// at 1 bit, by conversion at 2 and 4 (as the key kernels choose; KiviBench 32768 0.5 64 on an
    /// AVX2-only EPYC, when the 1-bit tables were 3-token ones: 1 bit by tables 708-746 us, by
    /// conversion 1054; 2 bits 1311 and 997; 4 bits 2507 and 1077, where the tables also cost their
    /// building per block).
    /// </summary>
    [SkipLocalsInit] // every staged float is written before it is read
    static unsafe void AccumulateHeads256<TWidth, THeads>(KiviFormat format, ReadOnlySpan<float> probabilities, int count, int stride, ReadOnlySpan<byte> values, Span<float> output)
        where TWidth : struct, ICodeWidth
        where THeads : struct, IHeadCount
    {
        const int lanes = 8, blockTokens = KiviFormat.BlockTokens;
        int heads = THeads.Count, d = format.HeadDim, gv = format.ValueGroupSize, groups = format.ValueGroupsPerToken;
        // At 1 bit with four or eight heads, spans of four blocks in 6-bit token weights and byte tables (KiviAttention.OneBitValues256.cs).
        bool spans = TWidth.Bits == 1 && heads >= 4 && gv % 16 == 0;
        int scaledFloats = (spans ? 4 : 1) * heads * groups * blockTokens, biasFloats = heads * groups * lanes, tableFloats = TWidth.Bits == 1 ? heads * 4 * lanes : 0;
        byte* space = stackalloc byte[(scaledFloats + biasFloats + tableFloats) * sizeof(float) + 32];
        float* aligned = Aligned32<float>(space);
        var scaled = new Span<float>(aligned, scaledFloats);                         // p_t s_t, [block][head][group][token]
        var biases = new Span<float>(aligned + scaledFloats, biasFloats);            // running Σ p_t z_t, [head][group][lane]
        float* tables = aligned + scaledFloats + biasFloats;                         // [head][run][two pairs' tables]
        Span<float> partial = stackalloc float[blockTokens];
        biases.Clear();
        ref float scaled0 = ref MemoryMarshal.GetReference(scaled);
        ref float bias0 = ref MemoryMarshal.GetReference(biases);
        ref float p0 = ref MemoryMarshal.GetReference(probabilities);
        ref float o = ref MemoryMarshal.GetReference(output);
        if (spans)
            AccumulateOneBitSpans256<THeads>(format, ref p0, count, stride, values, scaled, ref bias0, partial, tables, ref o);
        else
        {
            for (int start = 0; start < count; start += blockTokens)
            {
                ref byte block = ref Unsafe.Add(ref MemoryMarshal.GetReference(values), (nint)(start / blockTokens) * format.ValueBlockBytes);
                StageBlock256<THeads>(format, ref p0, count, stride, values, start, ref scaled0, ref bias0, partial);
                for (int grp = 0; grp < groups; grp++)
                {
                    ref float ps = ref Unsafe.Add(ref scaled0, grp * blockTokens);
                    if (TWidth.Bits == 1) AddOneBitByPairTables256<THeads>(ref ps, groups * blockTokens, ref block, d, grp * gv, (grp + 1) * gv, tables, ref o);
                    else AddByConversion256<TWidth, THeads>(ref ps, groups * blockTokens, ref block, d, grp * gv, (grp + 1) * gv, ref o);
                }
            }
        }

        // Σ_t p_t z_t of each head and group, added to each of the group's channels.
        for (int i = 0; i < heads; i++)
            for (int grp = 0; grp < groups; grp++)
            {
                var bias = Vector256.Create(Vector256.Sum(Vector256.LoadUnsafe(ref bias0, (nuint)((i * groups + grp) * lanes))));
                for (int c = grp * gv; c < (grp + 1) * gv; c += lanes)
                    (Vector256.LoadUnsafe(ref o, (nuint)(i * d + c)) + bias).StoreUnsafe(ref o, (nuint)(i * d + c));
            }
    }

    /// <summary>
    /// 1 bit: Σ_t p_t s_t code_t,c into channels [first, end) of each head's output, from one
    /// group's staged p_t s_t (<paramref name="ps"/>, heads <paramref name="headStaged"/> apart). Each
    /// pair of tokens has a 4-entry table (0, w_a, w_b, w_a + w_b), 16 bytes, and two bits of a
    /// channel's nibble pick its entry's 4 bytes by <c>vpshufb</c>, whose byte controls come from the
    /// nibbles by shifts and masks by constants.
    /// </summary>
    /// <remarks>
    /// Why bytes: on the first Zen generation (measured: a run of independent instructions, cycles
    /// each) <c>vpshufb</c> on 32 bytes takes 1, as an add; <c>vpermps</c> and <c>vpermilps</c> by a
    /// register 4, and so does <c>vpsrlvd</c>. The kernel before looked a run's nibble up in an
    /// 8-entry table of 3 tokens by <c>vpermps</c>, added the 4th token by a blend, and shifted the
    /// nibbles into place by <c>vpsrlvd</c>; the same pair tables by <c>vpermilps</c> were slower
    /// still (KiviBench 32768 0.5 64, 1 bit, groups of 64, 4 heads: 847 us a pass before, 1254 by
    /// <c>vpermilps</c>, 772 so). Eight heads (<see cref="EightHeads"/>, a decode step's real and
    /// speculative rows) share a run's controls: 32K tokens, 1 bit, groups of 64, 8 heads in one call
    /// 1370-1433 us against 1589-1604 as two calls of four.
    /// </remarks>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static unsafe void AddOneBitByPairTables256<THeads>(ref float ps, int headStaged, ref byte block, int d, int first, int end, float* tables, ref float o)
        where THeads : struct, IHeadCount
    {
        const int lanes = 8, runs = 4;
        int heads = THeads.Count, runBytes = d / 2; // a run is d nibbles, 4 tokens' codes each
        // Eight tokens' weights (a0 b0 a1 b1 | a2 b2 a3 b3) make the tables of pairs 0 and 2 in one
        // register's halves and of pairs 1 and 3 in another's, by shuffles within halves; stored a
        // table at a time, in token order.
        var hasFirst = Vector256.Create(0f, 1, 0, 1, 0, 1, 0, 1);
        var hasSecond = Vector256.Create(0f, 0, 1, 1, 0, 0, 1, 1);
        for (int i = 0; i < heads; i++)
        {
            ref float tokens = ref Unsafe.Add(ref ps, i * headStaged);
            float* table = tables + i * runs * lanes;
            for (int t = 0; t < KiviFormat.BlockTokens; t += lanes, table += 2 * lanes)
            {
                var x = Vector256.LoadUnsafe(ref tokens, (nuint)t);
                var even = Vector256.FusedMultiplyAdd(Avx.Shuffle(x, x, 0x55), hasSecond, Avx.Shuffle(x, x, 0x00) * hasFirst);
                var odd = Vector256.FusedMultiplyAdd(Avx.Shuffle(x, x, 0xFF), hasSecond, Avx.Shuffle(x, x, 0xAA) * hasFirst);
                even.GetLower().Store(table);
                odd.GetLower().Store(table + 4);
                even.GetUpper().Store(table + lanes);
                odd.GetUpper().Store(table + lanes + 4);
            }
        }
        // Lane i's byte control: the word's byte holding channel i's nibble in all four bytes.
        var spread = Vector256.Create((byte)0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
        var entryBits = Vector256.Create((byte)0x0C);
        var entryBytes = Vector256.Create(0x03020100).AsByte(); // an entry's 4 bytes, from 4 × its index
        int headTables = runs * lanes;
        for (int c = first; c < end; c += lanes)
        {
            var a0 = Vector256.LoadUnsafe(ref o, (nuint)c);
            Vector256<float> a1 = default, a2 = default, a3 = default, a4 = default, a5 = default, a6 = default, a7 = default;
            if (heads >= 4)
            {
                a1 = Vector256.LoadUnsafe(ref o, (nuint)(d + c));
                a2 = Vector256.LoadUnsafe(ref o, (nuint)(2 * d + c));
                a3 = Vector256.LoadUnsafe(ref o, (nuint)(3 * d + c));
            }
            if (heads == 8)
            {
                a4 = Vector256.LoadUnsafe(ref o, (nuint)(4 * d + c));
                a5 = Vector256.LoadUnsafe(ref o, (nuint)(5 * d + c));
                a6 = Vector256.LoadUnsafe(ref o, (nuint)(6 * d + c));
                a7 = Vector256.LoadUnsafe(ref o, (nuint)(7 * d + c));
            }
            ref byte nibbles = ref Unsafe.Add(ref block, c / 2); // run 0's nibbles of channels c .. c+7
            float* tn = tables;
            for (int run = 0; run < runs; run++)
            {
                // Channel i's nibble in the low 4 bits of lane i's bytes (odd lanes take the byte's high
                // nibble), then per pair 4 × its 2 bits plus 0-3: the byte controls of its entry.
                var bytes = Avx2.Shuffle(Vector256.Create(Unsafe.ReadUnaligned<uint>(ref Unsafe.Add(ref nibbles, run * runBytes))).AsByte(), spread).AsUInt32();
                var nibble = Avx2.Blend(bytes, bytes >>> 4, 0b1010_1010).AsByte();
                var first01 = ((nibble.AsUInt32() << 2).AsByte() & entryBits) | entryBytes;
                var second23 = (nibble & entryBits) | entryBytes;
                a0 += LookUpPairs(tn, first01, second23);
                if (heads >= 4)
                {
                    a1 += LookUpPairs(tn + headTables, first01, second23);
                    a2 += LookUpPairs(tn + 2 * headTables, first01, second23);
                    a3 += LookUpPairs(tn + 3 * headTables, first01, second23);
                }
                if (heads == 8)
                {
                    a4 += LookUpPairs(tn + 4 * headTables, first01, second23);
                    a5 += LookUpPairs(tn + 5 * headTables, first01, second23);
                    a6 += LookUpPairs(tn + 6 * headTables, first01, second23);
                    a7 += LookUpPairs(tn + 7 * headTables, first01, second23);
                }
                tn += lanes;
            }
            a0.StoreUnsafe(ref o, (nuint)c);
            if (heads >= 4)
            {
                a1.StoreUnsafe(ref o, (nuint)(d + c));
                a2.StoreUnsafe(ref o, (nuint)(2 * d + c));
                a3.StoreUnsafe(ref o, (nuint)(3 * d + c));
            }
            if (heads == 8)
            {
                a4.StoreUnsafe(ref o, (nuint)(4 * d + c));
                a5.StoreUnsafe(ref o, (nuint)(5 * d + c));
                a6.StoreUnsafe(ref o, (nuint)(6 * d + c));
                a7.StoreUnsafe(ref o, (nuint)(7 * d + c));
            }
        }
    }

    /// <summary>A run's two pair tables (at <paramref name="tables"/> and 4 floats on), each in both halves, looked up by the byte controls <paramref name="first"/> and <paramref name="second"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static unsafe Vector256<float> LookUpPairs(float* tables, Vector256<byte> first, Vector256<byte> second) =>
        Avx2.Shuffle(Avx.BroadcastVector128ToVector256(tables).AsByte(), first).AsSingle() + Avx2.Shuffle(Avx.BroadcastVector128ToVector256(tables + 4).AsByte(), second).AsSingle();

    /// <summary>
    /// 2 and 4 bits: as <see cref="AddOneBitByPairTables256"/>, but each token's codes of 8 channels are
    /// shifted out of the run's nibbles, masked and converted, and multiply-added per head.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void AddByConversion256<TWidth, THeads>(ref float ps, int headStaged, ref byte block, int d, int first, int end, ref float o)
        where TWidth : struct, ICodeWidth
        where THeads : struct, IHeadCount
    {
        const int lanes = 8;
        int heads = THeads.Count, runTokens = 4 / TWidth.Bits, runs = KiviFormat.BlockTokens / runTokens, runBytes = d / 2;
        var mask = Vector256.Create((uint)((1 << TWidth.Bits) - 1));
        var down = Vector256.Create(0u, 4, 8, 12, 16, 20, 24, 28); // token 0's code of channel i to the bottom of lane i
        for (int c = first; c < end; c += lanes)
        {
            var a0 = Vector256.LoadUnsafe(ref o, (nuint)c);
            Vector256<float> a1 = default, a2 = default, a3 = default;
            if (heads == 4)
            {
                a1 = Vector256.LoadUnsafe(ref o, (nuint)(d + c));
                a2 = Vector256.LoadUnsafe(ref o, (nuint)(2 * d + c));
                a3 = Vector256.LoadUnsafe(ref o, (nuint)(3 * d + c));
            }
            ref byte nibbles = ref Unsafe.Add(ref block, c / 2);
            ref float pt = ref ps;
            for (int run = 0; run < runs; run++)
            {
                var word = Vector256.Create(Unsafe.ReadUnaligned<uint>(ref Unsafe.Add(ref nibbles, run * runBytes)));
                var shift = down;
                for (int j = 0; j < runTokens; j++)
                {
                    var code = Vector256.ConvertToSingle((Avx2.ShiftRightLogicalVariable(word, shift) & mask).AsInt32());
                    shift += Vector256.Create((uint)TWidth.Bits);
                    a0 = Vector256.FusedMultiplyAdd(code, Vector256.Create(pt), a0);
                    if (heads == 4)
                    {
                        a1 = Vector256.FusedMultiplyAdd(code, Vector256.Create(Unsafe.Add(ref pt, headStaged)), a1);
                        a2 = Vector256.FusedMultiplyAdd(code, Vector256.Create(Unsafe.Add(ref pt, 2 * headStaged)), a2);
                        a3 = Vector256.FusedMultiplyAdd(code, Vector256.Create(Unsafe.Add(ref pt, 3 * headStaged)), a3);
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

    /// <summary>Block <paramref name="start"/>/16's p_t s_t into <paramref name="scaled"/> ([head][group][token]) and its p_t z_t added to the running <paramref name="bias"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void StageBlock256<THeads>(KiviFormat format, ref float p0, int count, int stride, ReadOnlySpan<byte> values, int start, ref float scaled, ref float bias, Span<float> partial)
        where THeads : struct, IHeadCount
    {
        const int lanes = 8, blockTokens = KiviFormat.BlockTokens;
        int heads = THeads.Count, groups = format.ValueGroupsPerToken;
        int n = Math.Min(blockTokens, count - start);
        ref ushort halves = ref Unsafe.As<byte, ushort>(ref Unsafe.Add(ref MemoryMarshal.GetReference(values), (nint)start / blockTokens * format.ValueBlockBytes + format.ValueScalesOffset));
        // A part-filled block's empty lanes may hold anything: their scales, zeros and probabilities count as 0.
        var validLow = Vector256.LessThan(Vector256<int>.Indices, Vector256.Create(n)).AsSingle();
        var validHigh = Vector256.LessThan(Vector256<int>.Indices + Vector256.Create(lanes), Vector256.Create(n)).AsSingle();
        for (int grp = 0; grp < groups; grp++)
        {
            var sLow = HalvesToSingle(ref halves, grp * blockTokens) & validLow;
            var sHigh = HalvesToSingle(ref halves, grp * blockTokens + lanes) & validHigh;
            var zLow = HalvesToSingle(ref halves, (groups + grp) * blockTokens) & validLow;
            var zHigh = HalvesToSingle(ref halves, (groups + grp) * blockTokens + lanes) & validHigh;
            for (int i = 0; i < heads; i++)
            {
                ref float p = ref Unsafe.Add(ref p0, i * stride + start);
                if (n < blockTokens)
                {
                    // By hand, not Span.CopyTo: a call here would make the JIT keep the method's vectors on the stack.
                    for (int t = 0; t < blockTokens; t++) partial[t] = t < n ? Unsafe.Add(ref p, t) : 0;
                    p = ref MemoryMarshal.GetReference(partial);
                }
                var pLow = Vector256.LoadUnsafe(ref p);
                var pHigh = Vector256.LoadUnsafe(ref p, lanes);
                int at = (i * groups + grp) * blockTokens;
                (pLow * sLow).StoreUnsafe(ref scaled, (nuint)at);
                (pHigh * sHigh).StoreUnsafe(ref scaled, (nuint)(at + lanes));
                ref float b = ref Unsafe.Add(ref bias, (i * groups + grp) * lanes);
                Vector256.FusedMultiplyAdd(pHigh, zHigh, Vector256.FusedMultiplyAdd(pLow, zLow, Vector256.LoadUnsafe(ref b))).StoreUnsafe(ref b);
            }
        }
    }

    /// <summary>
    /// <paramref name="space"/> (a stackalloc with 32 bytes to spare) rounded up to a 32-byte boundary.
    /// A thread's stack starts at a random 16-byte offset, so a stackalloc does too; a 256-bit load or
    /// store of a buffer that is not 32-byte aligned crosses a cache line every other time, and a store
    /// that crosses one is not forwarded to the load that reads it back. Measured on the Zen 3: the
    /// 1-bit value pass (8 heads, 32K tokens) took 1.0-1.2 ms in most processes and 0.47 in the others,
    /// by where the stack happened to start, before its buffers were aligned.
    /// </summary>
    static unsafe T* Aligned32<T>(byte* space) where T : unmanaged => (T*)(((nuint)space + 31) & ~(nuint)31);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Vector256<float> HalvesToSingle(ref ushort halves, int at) =>
        QuantMath.HalfToSingle(Vector256.WidenLower(Vector128.LoadUnsafe(ref halves, (nuint)at).ToVector256Unsafe()));
}
