using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace SpeCache.KvCache.Quantization;

/// <summary>
/// The 256-bit 1-bit key scores by byte tables. Per group and query head the weights w = q∘s are
/// rounded to 6 bits, w_c ≈ low + step × u_c (low the least weight, step the range over 63), so a
/// token's Σ_c w_c code_t,c is low × (its set codes) + step × Σ u_c over its set channels, and that
/// sum is integer work: per 4 channels a 16-entry table of the sums of their u (at most 4 × 63 =
/// 252, a byte), and every token's 4 codes of those channels (a nibble) pick its entry. One
/// <c>vpshufb</c> looks up 32 nibbles at once, 128 channel-tokens.
/// </summary>
/// <remarks>
/// <para>Why this shape: a register of lookups must hold nibbles of the same 4 channels, but a load
/// of key codes holds 8 tokens' 32 channels (a word each). So per 32 tokens the codes are
/// transposed once for all heads: per word and code byte k, a register of byte k of 32 tokens, split
/// into low nibbles (channels 8k..8k+3) and high ones (8k+4..8k+7), and those put as [low | high]
/// of 16 tokens in the two 128-bit halves, because <c>vpshufb</c> has a table per half: half 0
/// looks up the low nibble's table and half 1 the high one's, the two tables one register, built
/// per head and group from 8 of its weight bytes (four more shuffles). Lookups add into 16-bit
/// lanes (each holding two tokens' bytes: the lane sum and, by <c>vpmaddubsw</c> with 0/1 weights,
/// the odd token's alone); the halves are added at the end. With 4 to 8 query heads (GQA, and the
/// speculative row) their weights are rounded side by side, a head a lane, so no step reduces across
/// lanes (<see cref="SixBitWeightsAcrossHeads"/>). The kernel this replaced masked each code byte's 8
/// weight bytes and summed them with <c>vpsadbw</c> (8 tokens × 8 channels an instruction): a 32K-token pass of 8 query heads, one thread, hot,
/// on Zen 3 took 472-489 us with groups of 64 and 588-617 with groups of 32; this one 213-223 and 322-335.</para>
/// <para>What rounding costs: each weight moves by at most step / 2, so a score by at most step / 2
/// times the token's set codes (<see cref="KeyScoresSixBitScalar"/> is this arithmetic one channel
/// at a time; the tests hold the kernel to it and it to that bound of the exact sum). The 1-bit
/// codes themselves move each key channel by up to half its group's range: on random keys the
/// weight rounding's RMS is 5.5 % of the 1-bit codes' RMS score error, 8.5 % with four channels 20
/// times the others (the outliers KIVI reports), so the two together are within 0.4 % of the codes'
/// error alone. Bytes (255 levels) would cut that fourfold, but their sums of 4 overflow a byte.</para>
/// </remarks>
public static partial class KiviAttention
{
    /// <summary>Levels of the 256-bit 1-bit key kernel's rounded weights, 0 to 63: four of them sum to a byte.</summary>
    public const int KeyWeightLevels = 63;

    /// <summary>
    /// The scalar reference <paramref name="kernel"/> computes, one token and channel at a time:
    /// <see cref="KeyScoresSixBitScalar"/> for the 256-bit kernel at 1 bit, the exact float sum
    /// (<see cref="KeyScoresScalar(KiviFormat, ReadOnlySpan{float}, ReadOnlySpan{byte}, Span{float}, int)"/>) for every other.
    /// </summary>
    public static void KeyScoresReference(KiviKernel kernel, KiviFormat format, ReadOnlySpan<float> queries, ReadOnlySpan<byte> group, Span<float> scores, int stride)
    {
        if (kernel == KiviKernel.Vector256 && format.Bits == 1) KeyScoresSixBitScalar(format, queries, group, scores, stride);
        else KeyScoresScalar(format, queries, group, scores, stride);
    }

    /// <summary>
    /// Scalar reference of the 256-bit 1-bit key kernel: <see cref="KeyScoresScalar(KiviFormat, ReadOnlySpan{float}, ReadOnlySpan{byte}, Span{float}, int)"/>
    /// with each head's q∘s rounded to 6 bits by <see cref="SixBitWeights"/> (over the padded channels, as
    /// the kernel reads them) and the codes' part summed as integers.
    /// </summary>
    public static void KeyScoresSixBitScalar(KiviFormat format, ReadOnlySpan<float> queries, ReadOnlySpan<byte> group, Span<float> scores, int stride)
    {
        if (format.Bits != 1) throw new ArgumentException($"6-bit weights are the 1-bit key kernel's, not {format.Bits}-bit codes'", nameof(format));
        int heads = CheckKeyScores(format, queries, group, scores, stride);
        int d = format.HeadDim, g = format.GroupSize, channels = format.KeyWordsPerToken * 32;
        var scales = MemoryMarshal.Cast<byte, Half>(group[..(2 * d)]);
        var zeros = MemoryMarshal.Cast<byte, Half>(group.Slice(2 * d, 2 * d));
        var codes = group.Slice(format.KeyCodesOffset, format.KeyCodeBytes);
        var weights = new float[channels];
        var levels = new byte[channels];
        for (int h = 0; h < heads; h++)
        {
            var q = queries.Slice(h * d, d);
            float bias = 0;
            for (int c = 0; c < d; c++)
            {
                bias += q[c] * (float)zeros[c];
                weights[c] = q[c] * (float)scales[c];
            }
            var (low, step) = SixBitWeights(weights, levels);
            for (int t = 0; t < g; t++)
            {
                int set = 0, sum = 0;
                for (int c = 0; c < d; c++)
                {
                    int code = KiviCodes.ReadKey(codes, format, t, c);
                    set += code;
                    sum += code * levels[c];
                }
                scores[h * stride + t] = MathF.FusedMultiplyAdd(step, sum, MathF.FusedMultiplyAdd(low, set, bias));
            }
        }
    }

    /// <summary>
    /// <paramref name="weights"/> rounded to <see cref="KeyWeightLevels"/> + 1 levels: w_c ≈ low + step × u_c,
    /// low the least weight, step (highest − low) / 63, u_c = (w_c − low) × 63 / (highest − low) rounded
    /// to the nearest (ties to even). Equal weights give step 0 and every level 0; a NaN among them, a NaN low.
    /// </summary>
    public static (float Low, float Step) SixBitWeights(ReadOnlySpan<float> weights, Span<byte> levels)
    {
        if (weights.IsEmpty) throw new ArgumentException("no weights to round", nameof(weights));
        if (levels.Length < weights.Length) throw new ArgumentException($"{weights.Length} weights need as many levels, got {levels.Length}", nameof(levels));
        float low = weights[0], high = weights[0];
        foreach (float w in weights)
        {
            low = MathF.Min(low, w);
            high = MathF.Max(high, w);
        }
        if (!(high > low))
        {
            levels[..weights.Length].Clear();
            return (low, 0);
        }
        float inverse = KeyWeightLevels / (high - low);
        for (int c = 0; c < weights.Length; c++) levels[c] = (byte)(int)MathF.Round((weights[c] - low) * inverse);
        return (low, (high - low) / KeyWeightLevels);
    }

    /// <summary>
    /// One head's weights q∘s staged in <paramref name="w"/> (zero past the head, up to the padded
    /// <paramref name="channels"/>, a multiple of 32) and rounded to levels as <see cref="SixBitWeights"/>
    /// does, the same levels; and its bias Σ q_c z_c.
    /// </summary>
    static unsafe void SixBitWeights256(ref float q, float* scale, float* zero, int d, int channels, float* w, byte* levels,
        out float low, out float step, out float bias)
    {
        var least = Vector256.Create(float.PositiveInfinity);
        var most = Vector256.Create(float.NegativeInfinity);
        var nan = Vector256<float>.Zero;
        var sum = Vector256<float>.Zero;
        for (int c = 0; c < channels; c += 8)
        {
            var x = Vector256<float>.Zero; // padding channels weigh 0, as the scalar reference counts them
            if (c < d)
            {
                var qc = Vector256.LoadUnsafe(ref q, (nuint)c);
                x = qc * Vector256.Load(scale + c);
                sum = Fma.MultiplyAdd(qc, Vector256.Load(zero + c), sum);
            }
            x.Store(w + c);
            least = Avx.Min(least, x);
            most = Avx.Max(most, x);
            nan |= Avx.CompareUnordered(x, x);
        }
        bias = Vector256.Sum(sum);
        least = Avx.Min(least, Avx.Permute2x128(least, least, 1));
        least = Avx.Min(least, Avx.Permute(least, 0b01_00_11_10));
        least = Avx.Min(least, Avx.Permute(least, 0b10_11_00_01)); // the least weight in every lane
        most = Avx.Max(most, Avx.Permute2x128(most, most, 1));
        most = Avx.Max(most, Avx.Permute(most, 0b01_00_11_10));
        most = Avx.Max(most, Avx.Permute(most, 0b10_11_00_01));
        low = nan == Vector256<float>.Zero ? least.ToScalar() : float.NaN;
        float high = most.ToScalar();
        if (!(high > low))
        {
            new Span<byte>(levels, channels).Clear();
            step = 0;
            return;
        }
        var inverse = Vector256.Create(KeyWeightLevels / (high - low));
        for (int c = 0; c < channels; c += 32)
        {
            // Rounded to nearest, ties to even (the default rounding mode), as MathF.Round; every value is in 0..63.
            var a = Avx.ConvertToVector256Int32((Vector256.Load(w + c) - least) * inverse);
            var b = Avx.ConvertToVector256Int32((Vector256.Load(w + c + 8) - least) * inverse);
            var e = Avx.ConvertToVector256Int32((Vector256.Load(w + c + 16) - least) * inverse);
            var f = Avx.ConvertToVector256Int32((Vector256.Load(w + c + 24) - least) * inverse);
            // The packs work in 128-bit halves, leaving 4-byte runs in the order a0 b0 e0 f0 a1 b1 e1 f1; the permute puts them back.
            var packed = Avx2.PackUnsignedSaturate(Avx2.PackSignedSaturate(a, b), Avx2.PackSignedSaturate(e, f));
            Avx2.PermuteVar8x32(packed.AsInt32(), Vector256.Create(0, 4, 1, 5, 2, 6, 3, 7)).AsByte().Store(levels + c);
        }
        step = (high - low) / KeyWeightLevels;
    }

    /// <summary>Where head i of a batch finds its 8 levels of a code byte in <see cref="SixBitWeightsAcrossHeads"/>'s layout, in units of 8 bytes.</summary>
    static int AcrossSlot(int i) => (i & 1) | (i & 4) >> 1 | (i & 2) << 1;

    /// <summary>
    /// <see cref="SixBitWeights256"/> for a batch of up to 8 heads at once, one head a lane: <paramref name="queries"/>
    /// channel-major (8 heads' q_c a vector), so each head's least and largest weight, bias and levels come
    /// from lane-wise work with no reduction across lanes, the same arithmetic as <see cref="SixBitWeights"/>
    /// lane by lane. Levels are written per code byte (8 channels): 64 bytes, 8 per head in the order
    /// <see cref="AcrossSlot"/> gives; lanes past the batch compute unused zeros. The caller has checked
    /// that every query and scale is finite, so no weight is NaN (a product of finite floats may overflow
    /// to infinity, never to NaN) and no lane needs a NaN check per channel.
    /// </summary>
    static unsafe void SixBitWeightsAcrossHeads(float* queries, float* scale, float* zero, int d, int channels, float* w, byte* levels,
        float* lows, float* steps, float* biases)
    {
        const int n = WeightBatchHeads;
        var least0 = Vector256.Create(float.PositiveInfinity);
        var least1 = least0;
        var most0 = Vector256.Create(float.NegativeInfinity);
        var most1 = most0;
        Vector256<float> bias0 = default, bias1 = default;
        // Two channels a step, with two chains for each of the least weight, the largest and the bias, so no step waits on the last.
        float* q = queries, x = w, end = scale + d;
        for (float* s = scale, z = zero; s < end; s += 2, z += 2, q += 2 * n, x += 2 * n)
        {
            var qc = Vector256.Load(q);
            var wc = qc * Vector256.Create(s[0]);
            bias0 = Fma.MultiplyAdd(qc, Vector256.Create(z[0]), bias0);
            wc.Store(x);
            least0 = Avx.Min(least0, wc);
            most0 = Avx.Max(most0, wc);
            qc = Vector256.Load(q + n);
            wc = qc * Vector256.Create(s[1]);
            bias1 = Fma.MultiplyAdd(qc, Vector256.Create(z[1]), bias1);
            wc.Store(x + n);
            least1 = Avx.Min(least1, wc);
            most1 = Avx.Max(most1, wc);
        }
        var low = Avx.Min(least0, least1);
        var most = Avx.Max(most0, most1);
        if (channels > d)
        {
            // Padding channels weigh 0, as the scalar reference counts them.
            low = Avx.Min(low, Vector256<float>.Zero);
            most = Avx.Max(most, Vector256<float>.Zero);
            for (float* p = w + d * n; p < w + channels * n; p += n) Vector256<float>.Zero.Store(p);
        }
        // Where a head's weights are all equal every level is 0 and the step 0, as SixBitWeights gives.
        var spread = Avx.CompareGreaterThan(most, low);
        var range = most - low;
        var inverse = Vector256.ConditionalSelect(spread, Vector256.Create((float)KeyWeightLevels) / range, Vector256<float>.Zero);
        Vector256.ConditionalSelect(spread, range / Vector256.Create((float)KeyWeightLevels), Vector256<float>.Zero).Store(steps);
        low.Store(lows);
        (bias0 + bias1).Store(biases);
        // Rounded to nearest, ties to even (the default rounding mode), as MathF.Round; every level is in 0..63.
        // (w - low) × inverse, not one FMA of w: with |low| far above the range, w × inverse - low × inverse
        // could round past 63 and four levels past a byte.
        var transpose = Vector256.Create((byte)0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15, 0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
        for (float* p = w, last = w + channels * n; p < last; p += 8 * n, levels += 8 * n)
        {
            var u0 = Avx.ConvertToVector256Int32((Vector256.Load(p) - low) * inverse);
            var u1 = Avx.ConvertToVector256Int32((Vector256.Load(p + n) - low) * inverse);
            var u2 = Avx.ConvertToVector256Int32((Vector256.Load(p + 2 * n) - low) * inverse);
            var u3 = Avx.ConvertToVector256Int32((Vector256.Load(p + 3 * n) - low) * inverse);
            var u4 = Avx.ConvertToVector256Int32((Vector256.Load(p + 4 * n) - low) * inverse);
            var u5 = Avx.ConvertToVector256Int32((Vector256.Load(p + 5 * n) - low) * inverse);
            var u6 = Avx.ConvertToVector256Int32((Vector256.Load(p + 6 * n) - low) * inverse);
            var u7 = Avx.ConvertToVector256Int32((Vector256.Load(p + 7 * n) - low) * inverse);
            // Per 128-bit half (heads 0..3, then 4..7): bytes [channel][head], turned into [head][channel], 4 channels a dword.
            var first = Avx2.Shuffle(Avx2.PackUnsignedSaturate(Avx2.PackSignedSaturate(u0, u1), Avx2.PackSignedSaturate(u2, u3)), transpose).AsUInt32();
            var second = Avx2.Shuffle(Avx2.PackUnsignedSaturate(Avx2.PackSignedSaturate(u4, u5), Avx2.PackSignedSaturate(u6, u7)), transpose).AsUInt32();
            // A head's 8 channels a qword: heads 0, 1, 4, 5 in one store and 2, 3, 6, 7 in the next.
            Avx2.UnpackLow(first, second).Store((uint*)levels);
            Avx2.UnpackHigh(first, second).Store((uint*)levels + 8);
        }
    }

    /// <summary>Whether all <paramref name="count"/> floats at <paramref name="values"/> (a multiple of 8) are finite: no NaN, no infinity.</summary>
    static unsafe bool AllFinite(float* values, int count)
    {
        var bad = Vector256<float>.Zero;
        var infinity = Vector256.Create(float.PositiveInfinity);
        // |x| < ∞ is false for NaN and for ±∞.
        for (int i = 0; i < count; i += 8) bad |= Avx.CompareNotLessThan(Vector256.Abs(Vector256.Load(values + i)), infinity);
        return bad == Vector256<float>.Zero;
    }

    /// <summary>Each token's count of codes that are 1 in a 1-bit key group (all its words), as a float, by nibble lookups: 8 tokens' word at a time.</summary>
    static unsafe void SetCodeCounts(KiviFormat format, ReadOnlySpan<byte> group, float* counts)
    {
        int words = format.KeyWordsPerToken;
        ref int codes = ref Unsafe.As<byte, int>(ref Unsafe.Add(ref MemoryMarshal.GetReference(group), format.KeyCodesOffset));
        var bitsIn = Vector256.Create((byte)0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
        var low = Vector256.Create((byte)0x0F);
        for (int t = 0; t < format.GroupSize; t += 8)
        {
            var bytes = Vector256<byte>.Zero; // per byte at most 8 × words ≤ 128 set codes
            for (int w = 0; w < words; w++)
            {
                var x = Vector256.LoadUnsafe(ref codes, (nuint)format.KeyWordIndex(t, w)).AsByte();
                bytes += Avx2.Shuffle(bitsIn, x & low) + Avx2.Shuffle(bitsIn, (x.AsUInt16() >>> 4).AsByte() & low);
            }
            // Each token's four bytes summed: adjacent pairs, then adjacent words.
            var pairs = Avx2.MultiplyAddAdjacent(bytes, Vector256.Create((sbyte)1));
            Vector256.ConvertToSingle(Avx2.MultiplyAddAdjacent(pairs, Vector256.Create((short)1))).Store(counts + t);
        }
    }

    static int Round32(int bytes) => (bytes + 31) & ~31;

    /// <summary>The next <paramref name="bytes"/> of a stack arena at <paramref name="next"/>, which moves on to the next 32-byte boundary.</summary>
    static unsafe byte* Take(ref byte* next, int bytes)
    {
        byte* taken = next;
        next += Round32(bytes);
        return taken;
    }

    /// <summary>Tokens whose nibbles the 256-bit 1-bit key kernel stages at a time: two units of 32 (a group of 16 is half a unit).</summary>
    const int NibbleChunkTokens = 64;

    /// <summary>Query heads whose 6-bit weights the 256-bit 1-bit key kernel rounds before their lookups: Llama's 4 per KV head, twice with the speculative row.</summary>
    const int WeightBatchHeads = 8;

    /// <summary>
    /// Batches of heads that round their weights side by side (<see cref="SixBitWeightsAcrossHeads"/>);
    /// heads past them (more than 32 query heads per KV head) one at a time, so the channel-major
    /// queries on the stack stay within 64 KB at the largest head.
    /// </summary>
    const int AcrossBatchesAtMost = 4;

    /// <summary>
    /// 1 bit on 256-bit vectors: the scores of every query head against <paramref name="groupCount"/>
    /// key groups, raising <paramref name="maxima"/> (unless empty) to each head's largest. Per group:
    /// scales, zeros and each token's set codes once for all heads; per 64 tokens the codes' nibbles
    /// staged once for all heads (<see cref="StageNibbles"/>); then per batch of up to 8 heads their
    /// 6-bit weights, and per head its tables and lookups (<see cref="LookUpNibbles"/>) and its scores.
    /// </summary>
    [SkipLocalsInit] // every staged value is written before it is read
    static unsafe void OneBitKeyScores256(KiviFormat format, ReadOnlySpan<float> queries, int heads, ReadOnlySpan<byte> groups, int groupCount,
        Span<float> scores, int stride, Span<float> maxima)
    {
        int d = format.HeadDim, g = format.GroupSize, bytes = format.KeyGroupBytes, words = format.KeyWordsPerToken, channels = words * 32;
        int chunk = Math.Min(g, NibbleChunkTokens), units = (chunk + 31) / 32;
        int batches = Math.Min(AcrossBatchesAtMost, (heads + WeightBatchHeads - 1) / WeightBatchHeads);
        bool track = !maxima.IsEmpty;
        // One stack arena for every buffer, each at a 32-byte boundary (see Aligned32; KeyScores of 8 heads
        // over 32K tokens, one thread: 237-241 us aligned, 250-255 with the buffers 16 bytes off).
        int scaleBytes = channels * 4, zeroBytes = d * 4, levelBytes = WeightBatchHeads * channels, stagedBytes = WeightBatchHeads * channels * 4,
            perHeadBytes = WeightBatchHeads * 4, countBytes = g * 4, nibbleBytes = 4 * words * units * 2 * 32, runningBytes = track ? 2 * heads * 32 : 0,
            acrossBytes = batches * d * WeightBatchHeads * 4;
        int arenaBytes = Round32(scaleBytes) + Round32(zeroBytes) + Round32(levelBytes) + Round32(stagedBytes) + 3 * Round32(perHeadBytes)
            + Round32(countBytes) + Round32(nibbleBytes) + Round32(runningBytes) + Round32(acrossBytes);
        byte* arena = stackalloc byte[arenaBytes + 32];
        byte* next = Aligned32<byte>(arena);
        float* scale = (float*)Take(ref next, scaleBytes);
        float* zero = (float*)Take(ref next, zeroBytes);
        byte* levels = Take(ref next, levelBytes);
        float* staged = (float*)Take(ref next, stagedBytes);
        float* lows = (float*)Take(ref next, perHeadBytes);
        float* steps = (float*)Take(ref next, perHeadBytes);
        float* biases = (float*)Take(ref next, perHeadBytes);
        float* setCounts = (float*)Take(ref next, countBytes);
        var nibbles = (Vector256<byte>*)Take(ref next, nibbleBytes);
        // Per head: [max, sum] of its scores so far, lane by lane. The sum is there to notice NaN and
        // infinite scores, which a lane max may drop (vmaxps returns its second operand when one is
        // NaN): the exact max of the written scores is then taken instead.
        var running = (Vector256<float>*)Take(ref next, runningBytes);
        float* queriesAcross = (float*)Take(ref next, acrossBytes);
        for (int i = 0; track && i < 2 * heads; i += 2)
        {
            running[i] = Vector256.Create(float.NegativeInfinity);
            running[i + 1] = Vector256<float>.Zero;
        }
        var indices = TableIndices.OfChannelLevels();
        ref float q0 = ref MemoryMarshal.GetReference(queries);
        // Each batch of 4 to 8 heads' queries channel-major, a vector of 8 heads per channel (heads past the batch 0).
        for (int b = 0; b < batches; b++)
            for (int c = 0; c < d; c++)
                for (int i = 0; i < WeightBatchHeads; i++)
                {
                    int h = b * WeightBatchHeads + i;
                    queriesAcross[(b * d + c) * WeightBatchHeads + i] = h < heads ? Unsafe.Add(ref q0, h * d + c) : 0;
                }
        bool finiteQueries = AllFinite(queriesAcross, batches * d * WeightBatchHeads);
        ref float score0 = ref MemoryMarshal.GetReference(scores);
        for (int j = 0; j < groupCount; j++)
        {
            var group = groups.Slice(j * bytes, bytes);
            GroupScalesAndZeros(format, group, new Span<float>(scale, channels), new Span<float>(zero, d));
            SetCodeCounts(format, group, setCounts);
            bool finite = finiteQueries && AllFinite(scale, d);
            ref int codes = ref Unsafe.As<byte, int>(ref Unsafe.Add(ref MemoryMarshal.GetReference(group), format.KeyCodesOffset));
            for (int start = 0; start < g; start += chunk)
            {
                StageNibbles(format, ref codes, start, chunk, nibbles);
                for (int h0 = 0; h0 < heads; h0 += WeightBatchHeads)
                {
                    // A batch's weights first, then its lookups. Side by side (a head a lane) when all its queries
                    // and this group's scales are finite; else one head at a time, each a chain of dependent steps
                    // (a min and max across lanes, a division, the conversions) that overlap when run in a row.
                    int batch = Math.Min(WeightBatchHeads, heads - h0);
                    bool across = batch >= 4 && finite && h0 < batches * WeightBatchHeads;
                    if (across)
                        SixBitWeightsAcrossHeads(queriesAcross + h0 / WeightBatchHeads * d * WeightBatchHeads, scale, zero, d, channels, staged, levels, lows, steps, biases);
                    else
                        for (int i = 0; i < batch; i++)
                            SixBitWeights256(ref Unsafe.Add(ref q0, (h0 + i) * d), scale, zero, d, channels, staged, levels + i * channels,
                                out lows[i], out steps[i], out biases[i]);
                    for (int i = 0; i < batch; i++)
                    {
                        int h = h0 + i;
                        ref float row = ref Unsafe.Add(ref score0, h * stride + j * g + start);
                        Vector256<float>* run = track ? running + 2 * h : null;
                        byte* own = across ? levels + 8 * AcrossSlot(i) : levels + i * channels;
                        int levelStride = across ? 8 * WeightBatchHeads : 8;
                        if (units == 2)
                        {
                            LookUpNibbles(nibbles, 4 * words, 2, own, levelStride, indices, out var a0, out var a1, out var b0, out var b1, out var c0, out var c1, out var e0, out var e1);
                            StoreUnitScores(ref row, a0, a1, b0, b1, 32, setCounts + start, lows[i], steps[i], biases[i], run);
                            StoreUnitScores(ref Unsafe.Add(ref row, 32), c0, c1, e0, e1, 32, setCounts + start + 32, lows[i], steps[i], biases[i], run);
                        }
                        else
                        {
                            LookUpNibbles(nibbles, 4 * words, 1, own, levelStride, indices, out var a0, out var a1, out var b0, out var b1, out _, out _, out _, out _);
                            StoreUnitScores(ref row, a0, a1, b0, b1, chunk, setCounts + start, lows[i], steps[i], biases[i], run);
                        }
                    }
                }
            }
        }
        if (!track) return;
        for (int h = 0; h < heads; h++)
            RaiseMax(ref maxima[h], HorizontalMax(running[2 * h]), Vector256.Sum(running[2 * h + 1]), scores.Slice(h * stride, groupCount * g));
    }

    /// <summary>
    /// The nibbles of <paramref name="count"/> tokens' codes from <paramref name="start"/> (16, 32 or 64
    /// tokens), per unit of 32 tokens: per word w and code byte k two registers, [low | high] nibbles of
    /// byte k for 16 tokens each, at nibbles[((4w + k) × units + unit) × 2 + half]. Within a unit,
    /// byte 4i + m of a 128-bit half (i = 0..3, half 1 adding 4 to i) holds token 8m + i; a unit of 16
    /// tokens reads zero codes for tokens 16..31.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static unsafe void StageNibbles(KiviFormat format, ref int codes, int start, int count, Vector256<byte>* nibbles)
    {
        int words = format.KeyWordsPerToken, units = (count + 31) / 32;
        var low = Vector256.Create((byte)0x0F);
        for (int unit = 0; unit < units; unit++)
        {
            int t0 = start + 32 * unit;
            bool half = count - 32 * unit == 16;
            for (int w = 0; w < words; w++)
            {
                // v_m: tokens 8m..8m+7's word w, token i's 4 bytes at 4i.
                nuint first = (nuint)format.KeyWordIndex(t0, w), third = half ? 0 : (nuint)format.KeyWordIndex(t0 + 16, w);
                var v0 = Vector256.LoadUnsafe(ref codes, first).AsByte();
                var v1 = Vector256.LoadUnsafe(ref codes, first + 8).AsByte();
                var v2 = half ? Vector256<byte>.Zero : Vector256.LoadUnsafe(ref codes, third).AsByte();
                var v3 = half ? Vector256<byte>.Zero : Vector256.LoadUnsafe(ref codes, third + 8).AsByte();
                // A 4×4 transpose of bytes within each dword i: x_k's byte 4i + m = v_m's byte 4i + k.
                var a = Avx2.UnpackLow(v0, v1).AsUInt16();
                var b = Avx2.UnpackHigh(v0, v1).AsUInt16();
                var c = Avx2.UnpackLow(v2, v3).AsUInt16();
                var e = Avx2.UnpackHigh(v2, v3).AsUInt16();
                var p0 = Avx2.UnpackLow(a, c).AsUInt32(); // dword p: bytes p of v0..v3, for p = 0..3 (token 0, bytes 0..3)
                var p1 = Avx2.UnpackHigh(a, c).AsUInt32();
                var p2 = Avx2.UnpackLow(b, e).AsUInt32();
                var p3 = Avx2.UnpackHigh(b, e).AsUInt32();
                var s0 = Avx2.UnpackLow(p0, p1).AsUInt64();
                var s1 = Avx2.UnpackHigh(p0, p1).AsUInt64();
                var s2 = Avx2.UnpackLow(p2, p3).AsUInt64();
                var s3 = Avx2.UnpackHigh(p2, p3).AsUInt64();
                var slot = nibbles + (4 * w * units + unit) * 2;
                Split(Avx2.UnpackLow(s0, s2).AsByte(), low, slot);
                Split(Avx2.UnpackHigh(s0, s2).AsByte(), low, slot + 2 * units);
                Split(Avx2.UnpackLow(s1, s3).AsByte(), low, slot + 4 * units);
                Split(Avx2.UnpackHigh(s1, s3).AsByte(), low, slot + 6 * units);
            }
        }
    }

    /// <summary>One code byte of 32 tokens into [low | high] nibbles of the first 16 (<paramref name="slot"/>) and of the second 16 (the next).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static unsafe void Split(Vector256<byte> x, Vector256<byte> low, Vector256<byte>* slot)
    {
        var lo = x & low;
        var hi = (x.AsUInt16() >>> 4).AsByte() & low;
        slot[0] = Avx2.Permute2x128(lo, hi, 0x20);
        slot[1] = Avx2.Permute2x128(lo, hi, 0x31);
    }

    /// <summary>
    /// The <c>vpshufb</c> indices that turn 4 levels per 128-bit half into that half's 16-entry table
    /// of their sums: entry e adds level j where bit j of e is set, level j being the byte at
    /// first + j × step of the half. An index with the top bit set reads 0.
    /// </summary>
    readonly struct TableIndices
    {
        public readonly Vector256<byte> Bit0, Bit1, Bit2, Bit3;

        TableIndices(Vector256<byte> first, byte step)
        {
            Bit0 = Index(first, step, 0);
            Bit1 = Index(first, step, 1);
            Bit2 = Index(first, step, 2);
            Bit3 = Index(first, step, 3);
        }

        /// <summary>The key kernel's: 8 weight levels (two nibbles' 4 channels) broadcast to both halves, half 0 taking levels 0..3 and half 1 levels 4..7.</summary>
        public static TableIndices OfChannelLevels() => new(Vector256.Create(Vector128<byte>.Zero, Vector128.Create((byte)4)), 1);

        /// <summary>The value kernel's: 8 tokens' levels in the low bytes of int lanes, a run of 4 in each half.</summary>
        public static TableIndices OfTokenLevels() => new(Vector256<byte>.Zero, 4);

        static Vector256<byte> Index(Vector256<byte> first, byte step, int j)
        {
            var entry = Vector256.Create((byte)0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
            var bit = Vector256.Create((byte)(1 << j));
            return Vector256.ConditionalSelect(Vector256.Equals(entry & bit, bit), first + Vector256.Create((byte)(j * step)), Vector256.Create((byte)0x80));
        }
    }

    /// <summary>
    /// One head's lookups over the staged nibbles of one or two units: per code byte (<paramref name="tableCount"/>
    /// of them, 4 per word) the two tables from its 8 levels (<paramref name="levelStride"/> bytes after the last
    /// byte's), then per unit and 16 tokens a lookup, its 16-bit
    /// lanes added into a sum and its odd bytes (by <c>vpmaddubsw</c> with 0, 1 weights) into another.
    /// Unit 0's [sum, odd] of its first and second 16 tokens in a0, a1 and b0, b1; unit 1's in c0, c1 and e0, e1.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static unsafe void LookUpNibbles(Vector256<byte>* nibbles, int tableCount, int units, byte* levels, int levelStride, in TableIndices indices,
        out Vector256<ushort> a0, out Vector256<ushort> a1, out Vector256<ushort> b0, out Vector256<ushort> b1,
        out Vector256<ushort> c0, out Vector256<ushort> c1, out Vector256<ushort> e0, out Vector256<ushort> e1)
    {
        a0 = a1 = b0 = b1 = c0 = c1 = e0 = e1 = default;
        var odd = Vector256.Create((ushort)0x0100).AsSByte();
        for (int k = 0; k < tableCount; k++, levels += levelStride, nibbles += 2 * units)
        {
            var u = Vector256.Create(*(ulong*)levels).AsByte();
            var table = Avx2.Shuffle(u, indices.Bit0) + Avx2.Shuffle(u, indices.Bit1) + Avx2.Shuffle(u, indices.Bit2) + Avx2.Shuffle(u, indices.Bit3);
            var r = Avx2.Shuffle(table, nibbles[0]);
            a0 += r.AsUInt16();
            a1 += Avx2.MultiplyAddAdjacent(r, odd).AsUInt16();
            r = Avx2.Shuffle(table, nibbles[1]);
            b0 += r.AsUInt16();
            b1 += Avx2.MultiplyAddAdjacent(r, odd).AsUInt16();
            if (units == 2)
            {
                r = Avx2.Shuffle(table, nibbles[2]);
                c0 += r.AsUInt16();
                c1 += Avx2.MultiplyAddAdjacent(r, odd).AsUInt16();
                r = Avx2.Shuffle(table, nibbles[3]);
                e0 += r.AsUInt16();
                e1 += Avx2.MultiplyAddAdjacent(r, odd).AsUInt16();
            }
        }
    }

    /// <summary>
    /// One unit's scores (<paramref name="count"/>: 32 tokens, or 16 for a half unit) from its lookups'
    /// sums: the halves (low and high nibbles) added, the even tokens' sums taken from the lane sums
    /// less 256 × the odd ones', each token's score bias + low × its set codes + step × its sum; the
    /// running [max, sum] raised when <paramref name="running"/> is not null.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static unsafe void StoreUnitScores(ref float scores, Vector256<ushort> sumA, Vector256<ushort> oddA, Vector256<ushort> sumB, Vector256<ushort> oddB,
        int count, float* setCounts, float low, float step, float bias, Vector256<float>* running)
    {
        // Half 0 of the result: the first 16 tokens (i = 0..3), half 1 the second (i = 4..7).
        var sum = Avx2.Permute2x128(sumA, sumB, 0x20) + Avx2.Permute2x128(sumA, sumB, 0x31);
        var odd = Avx2.Permute2x128(oddA, oddB, 0x20) + Avx2.Permute2x128(oddA, oddB, 0x31);
        // The lane sums wrap past 65535; the even bytes' own sum is below it, so the wrapped difference is exact.
        var even = (sum - (odd << 8)).AsInt32();
        var mask = Vector256.Create(0xFFFF);
        var lows = Vector256.Create(low);
        var steps = Vector256.Create(step);
        var biases = Vector256.Create(bias);
        // Dword i of `even` holds tokens i (low half) and 16 + i; of `odd`, tokens 8 + i and 24 + i.
        var x0 = StoreScores8(ref scores, even & mask, setCounts, lows, steps, biases);
        var x1 = StoreScores8(ref Unsafe.Add(ref scores, 8), odd.AsInt32() & mask, setCounts + 8, lows, steps, biases);
        var max = Avx.Max(x0, x1);
        var total = x0 + x1;
        if (count == 32)
        {
            var x2 = StoreScores8(ref Unsafe.Add(ref scores, 16), even >>> 16, setCounts + 16, lows, steps, biases);
            var x3 = StoreScores8(ref Unsafe.Add(ref scores, 24), odd.AsInt32() >>> 16, setCounts + 24, lows, steps, biases);
            max = Avx.Max(max, Avx.Max(x2, x3));
            total += x2 + x3;
        }
        if (running == null) return;
        running[0] = Avx.Max(running[0], max);
        running[1] += total;
    }

    /// <summary>8 tokens' scores, bias + low × their set codes + step × their <paramref name="sums"/>, stored and returned.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static unsafe Vector256<float> StoreScores8(ref float scores, Vector256<int> sums, float* setCounts, Vector256<float> low, Vector256<float> step, Vector256<float> bias)
    {
        var start = Fma.MultiplyAdd(low, Vector256.Load(setCounts), bias);
        var x = Fma.MultiplyAdd(step, Vector256.ConvertToSingle(sums), start);
        x.StoreUnsafe(ref scores);
        return x;
    }
}
