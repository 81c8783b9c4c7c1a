using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
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
    /// At 1 bit the vector kernel goes further: every 4 bits of a token's codes (4 channels) take one
    /// of 16 values, so per group and head it tabulates the 16 possible sums of those channels'
    /// q_c s_c, and a token's score is one table lookup per 4 bits. A permute looks up 16 tokens at
    /// once (each lane indexes with its own token's bits), so 16 tokens cost one permute and one add
    /// per 4 channels and query head, where converting codes to floats and multiply-adding them cost
    /// a conversion per channel and an FMA per channel and head: about a third of the operations
    /// (perf had that kernel at 27 % of a 32K-token specache decode step). At 2 and 4 bits a table
    /// covers only 2 or 1 channels and the conversion is cheaper. The 256-bit kernel at 1 bit sums
    /// q∘s rounded to 6 bits instead, in byte tables (KiviAttention.OneBitKeys256.cs), within half a
    /// step per set code of this sum; <see cref="KeyScoresReference"/> names the scalar form each kernel computes.
    /// </remarks>
    public static void KeyScores(KiviFormat format, ReadOnlySpan<float> queries, ReadOnlySpan<byte> group, Span<float> scores) =>
        KeyScores(format, queries, group, scores, format.GroupSize);

    /// <summary>
    /// <see cref="KeyScores(KiviFormat, ReadOnlySpan{float}, ReadOnlySpan{byte}, Span{float})"/> with head h's
    /// G scores written at <paramref name="scores"/>[h × <paramref name="stride"/>], so a caller keeping one
    /// row of scores per head over the whole context gets them in place (no copy per group).
    /// </summary>
    public static void KeyScores(KiviFormat format, ReadOnlySpan<float> queries, ReadOnlySpan<byte> group, Span<float> scores, int stride) =>
        KeyScores(format, queries, group, scores, stride, BestKernel(format));

    /// <summary>The strided <c>KeyScores</c> by a chosen kernel (benches and tests compare them); it must <see cref="Runs"/> here.</summary>
    public static void KeyScores(KiviFormat format, ReadOnlySpan<float> queries, ReadOnlySpan<byte> group, Span<float> scores, int stride, KiviKernel kernel)
    {
        int heads = CheckKeyScores(format, queries, group, scores, stride);
        CheckKernel(kernel, format);
        ScoresByKernel(kernel, format, queries, heads, group, scores, stride);
    }

    /// <summary>The kernel's scores of <paramref name="heads"/> query heads, the arguments already checked.</summary>
    static void ScoresByKernel(KiviKernel kernel, KiviFormat format, ReadOnlySpan<float> queries, int heads, ReadOnlySpan<byte> group, Span<float> scores, int stride)
    {
        switch (kernel, format.Bits)
        {
            case (KiviKernel.Vector512, 1): OneBitKeyScores512(format, queries, heads, group, 1, scores, stride, []); break;
            case (KiviKernel.Vector512, 2): KeyScoresVector<TwoBits>(format, queries, heads, group, scores, stride); break;
            case (KiviKernel.Vector512, _): KeyScoresVector<FourBits>(format, queries, heads, group, scores, stride); break;
            case (KiviKernel.Vector256, 1): OneBitKeyScores256(format, queries, heads, group, 1, scores, stride, []); break;
            case (KiviKernel.Vector256, 2): KeyScores256<TwoBits>(format, queries, heads, group, scores, stride); break;
            case (KiviKernel.Vector256, _): KeyScores256<FourBits>(format, queries, heads, group, scores, stride); break;
            case (KiviKernel.Vector128, 1): KeyScores128<OneBit>(format, queries, heads, group, scores, stride); break;
            case (KiviKernel.Vector128, 2): KeyScores128<TwoBits>(format, queries, heads, group, scores, stride); break;
            case (KiviKernel.Vector128, _): KeyScores128<FourBits>(format, queries, heads, group, scores, stride); break;
            default: KeyScoresScalar(format, queries, group, scores, stride); break;
        }
    }

    /// <summary>
    /// The strided <c>KeyScores</c> that also raises <paramref name="maxima"/>[h] to the largest of
    /// head h's G scores, so a caller that needs each row's max (softmax, top-k) makes no pass of its
    /// own over 32K-score rows (that pass was 1.5 % of a 32K-token specache decode step): the 512-bit
    /// 1-bit kernel keeps the max in a register as it writes the scores, the others take it from
    /// the group's scores while they are in L1. NaN scores make the max NaN, as TensorPrimitives.Max.
    /// </summary>
    public static void KeyScores(KiviFormat format, ReadOnlySpan<float> queries, ReadOnlySpan<byte> group, Span<float> scores, int stride, Span<float> maxima) =>
        KeyScores(format, queries, group, 1, scores, stride, maxima);

    /// <summary>
    /// <see cref="KeyScores(KiviFormat, ReadOnlySpan{float}, ReadOnlySpan{byte}, Span{float}, int, Span{float})"/>
    /// over <paramref name="groupCount"/> key groups packed one after another in <paramref name="groups"/>:
    /// group j's scores land at [j × G, (j + 1) × G) of each head's row, and each head's max covers them
    /// all (empty <paramref name="maxima"/>: no maxima kept). One call per KV head and step instead of
    /// one per group: the 512-bit 1-bit kernel's checks, scratch and running maxima are set up once,
    /// and the maxima reduced once (per group, that set-up and the reductions of four heads' maxima
    /// were a third of the kernel's time).
    /// </summary>
    public static void KeyScores(KiviFormat format, ReadOnlySpan<float> queries, ReadOnlySpan<byte> groups, int groupCount, Span<float> scores, int stride, Span<float> maxima)
    {
        var kernel = BestKernel(format);
        int heads = CheckKeyScores(format, queries, groups, groupCount, scores, stride);
        if (!maxima.IsEmpty && maxima.Length < heads) throw new ArgumentException($"{heads} query heads need as many maxima, got {maxima.Length}", nameof(maxima));
        if (groupCount == 0) return;
        if (kernel == KiviKernel.Vector512 && format.Bits == 1)
        {
            OneBitKeyScores512(format, queries, heads, groups, groupCount, scores, stride, maxima);
            return;
        }
        if (kernel == KiviKernel.Vector256 && format.Bits == 1)
        {
            OneBitKeyScores256(format, queries, heads, groups, groupCount, scores, stride, maxima);
            return;
        }
        int g = format.GroupSize, bytes = format.KeyGroupBytes;
        for (int j = 0; j < groupCount; j++)
            ScoresByKernel(kernel, format, queries, heads, groups.Slice(j * bytes, bytes), scores[(j * g)..], stride);
        if (maxima.IsEmpty) return;
        for (int h = 0; h < heads; h++)
            maxima[h] = MathF.Max(maxima[h], TensorPrimitives.Max(scores.Slice(h * stride, groupCount * g)));
    }

    /// <summary>
    /// The widest kernel this CPU runs on <paramref name="format"/>: 512-bit (AVX-512, heads of a
    /// multiple of 16), else 256-bit (AVX2 and FMA), else 128-bit (any CPU with hardware vectors:
    /// NEON, SSE), else the scalar reference.
    /// </summary>
    public static KiviKernel BestKernel(KiviFormat format) =>
        Runs(KiviKernel.Vector512, format) ? KiviKernel.Vector512
        : Runs(KiviKernel.Vector256, format) ? KiviKernel.Vector256
        : Runs(KiviKernel.Vector128, format) ? KiviKernel.Vector128
        : KiviKernel.Scalar;

    /// <summary>Whether <paramref name="kernel"/> can run on this CPU and read <paramref name="format"/>.</summary>
    public static bool Runs(KiviKernel kernel, KiviFormat format) => kernel switch
    {
        KiviKernel.Vector512 => Vector512.IsHardwareAccelerated && Avx512F.IsSupported && format.Vectorizable,
        KiviKernel.Vector256 => Avx2.IsSupported && Fma.IsSupported && format.HeadDim % KiviFormat.HeadDimMultiple == 0,
        KiviKernel.Vector128 => Vector128.IsHardwareAccelerated && format.HeadDim % KiviFormat.HeadDimMultiple == 0,
        _ => true,
    };

    static void CheckKernel(KiviKernel kernel, KiviFormat format)
    {
        if (!Runs(kernel, format))
            throw new PlatformNotSupportedException($"the {kernel} KIVI kernel does not run on this CPU for heads of {format.HeadDim}");
    }

    /// <summary>Scalar reference of <see cref="KeyScores(KiviFormat, ReadOnlySpan{float}, ReadOnlySpan{byte}, Span{float}, int)"/>: the same sum, one token and channel at a time.</summary>
    public static void KeyScoresScalar(KiviFormat format, ReadOnlySpan<float> queries, ReadOnlySpan<byte> group, Span<float> scores) =>
        KeyScoresScalar(format, queries, group, scores, format.GroupSize);

    /// <summary>Scalar reference of the strided <c>KeyScores</c>.</summary>
    public static void KeyScoresScalar(KiviFormat format, ReadOnlySpan<float> queries, ReadOnlySpan<byte> group, Span<float> scores, int stride)
    {
        int heads = CheckKeyScores(format, queries, group, scores, stride);
        int d = format.HeadDim, g = format.GroupSize;
        var scales = MemoryMarshal.Cast<byte, Half>(group[..(2 * d)]);
        var zeros = MemoryMarshal.Cast<byte, Half>(group.Slice(2 * d, 2 * d));
        var codes = group.Slice(format.KeyCodesOffset, format.KeyCodeBytes);
        for (int h = 0; h < heads; h++)
        {
            var q = queries.Slice(h * d, d);
            float bias = 0;
            for (int c = 0; c < d; c++) bias += q[c] * (float)zeros[c];
            for (int t = 0; t < g; t++)
            {
                float sum = 0;
                for (int c = 0; c < d; c++)
                    sum = MathF.FusedMultiplyAdd(q[c] * (float)scales[c], KiviCodes.ReadKey(codes, format, t, c), sum);
                scores[h * stride + t] = sum + bias;
            }
        }
    }

    static int CheckKeyScores(KiviFormat format, ReadOnlySpan<float> queries, ReadOnlySpan<byte> group, Span<float> scores, int stride) =>
        CheckKeyScores(format, queries, group, 1, scores, stride);

    /// <summary>The arguments of <paramref name="groupCount"/> key groups' scores checked; returns the number of query heads.</summary>
    static int CheckKeyScores(KiviFormat format, ReadOnlySpan<float> queries, ReadOnlySpan<byte> groups, int groupCount, Span<float> scores, int stride)
    {
        if (format.HeadDim == 0) throw new ArgumentException("the KIVI format is uninitialized (default)", nameof(format));
        int heads = queries.Length / format.HeadDim;
        if (heads == 0 || queries.Length != heads * format.HeadDim)
            throw new ArgumentException($"queries must be a whole number of {format.HeadDim}-float heads, not {queries.Length} floats", nameof(queries));
        if (groupCount < 0) throw new ArgumentOutOfRangeException(nameof(groupCount), $"{groupCount} key groups");
        long tokens = (long)groupCount * format.GroupSize, bytes = (long)groupCount * format.KeyGroupBytes;
        if (groups.Length < bytes)
            throw new ArgumentException($"{groupCount} key group(s) of {format.KeyGroupBytes} bytes are {bytes} bytes, got {groups.Length}", nameof(groups));
        if (stride < tokens)
            throw new ArgumentOutOfRangeException(nameof(stride), $"a stride of {stride} scores between heads is shorter than the {tokens} tokens of {groupCount} key group(s)");
        if (scores.Length < (heads - 1L) * stride + tokens)
            throw new ArgumentException($"{heads} heads x {tokens} tokens at a stride of {stride} need {(heads - 1L) * stride + tokens} scores, got {scores.Length}", nameof(scores));
        return heads;
    }

    /// <summary>
    /// A key group's per-channel scales and zeros as floats, by the full cache's inlined half
    /// conversion (two library calls per 64-token group were 2 % of a 32K-token specache step); the
    /// scales of padding channels past the head are 0, so q∘s is 0 there and their (zero) codes add
    /// nothing.
    /// </summary>
    static unsafe void GroupScalesAndZeros(KiviFormat format, ReadOnlySpan<byte> group, Span<float> scale, Span<float> zero)
    {
        int d = format.HeadDim;
        fixed (byte* halves = group)
        fixed (float* s = scale)
        fixed (float* z = zero)
        {
            F16.ToSingle((ushort*)halves, s, d);
            F16.ToSingle((ushort*)halves + d, z, d);
        }
        scale[d..].Clear();
    }

    [SkipLocalsInit] // every staged float is written before it is read; zeroing them cost a pass per group
    static void KeyScoresVector<TWidth>(KiviFormat format, ReadOnlySpan<float> queries, int heads, ReadOnlySpan<byte> group, Span<float> scores, int stride)
        where TWidth : struct, ICodeWidth
    {
        int d = format.HeadDim, g = format.GroupSize;
        int channels = format.KeyWordsPerToken * format.ChannelsPerKeyWord; // d, or more when the last word is padded
        Span<float> scale = stackalloc float[channels];
        Span<float> zero = stackalloc float[d];
        GroupScalesAndZeros(format, group, scale, zero);
        Span<float> qs = stackalloc float[4 * channels];
        int h = 0;
        // Four query heads at a time share each load of 16 tokens' code words (GQA models have 2 to
        // 8 query heads per KV head); the rest one at a time.
        for (; h + 4 <= heads; h += 4)
            ScoreHeads<TWidth, FourHeads>(format, queries.Slice(h * d, 4 * d), scale, zero, qs, group, scores.Slice(h * stride, 3 * stride + g), stride);
        for (; h < heads; h++)
            ScoreHeads<TWidth, OneHead>(format, queries.Slice(h * d, d), scale, zero, qs, group, scores.Slice(h * stride, g), stride);
    }

    /// <summary>
    /// The scores of <typeparamref name="THeads"/> query heads against one key group of 2- or 4-bit
    /// codes: q∘s and the bias per head, the scores started at the bias, then the codes' part by
    /// conversion (1 bit takes <see cref="OneBitKeyScores512"/>).
    /// </summary>
    static void ScoreHeads<TWidth, THeads>(KiviFormat format, ReadOnlySpan<float> queries, ReadOnlySpan<float> scale, ReadOnlySpan<float> zero,
        Span<float> qs, ReadOnlySpan<byte> group, Span<float> scores, int stride)
        where TWidth : struct, ICodeWidth
        where THeads : struct, IHeadCount
    {
        int g = format.GroupSize;
        ref float score0 = ref MemoryMarshal.GetReference(scores);
        StageHeads<THeads>(format, queries, scale, zero, qs, out var b0, out var b1, out var b2, out var b3);
        StartScores(ref score0, g, Vector512.Create(Vector512.Sum(b0)));
        if (THeads.Count == 4)
        {
            StartScores(ref Unsafe.Add(ref score0, stride), g, Vector512.Create(Vector512.Sum(b1)));
            StartScores(ref Unsafe.Add(ref score0, 2 * stride), g, Vector512.Create(Vector512.Sum(b2)));
            StartScores(ref Unsafe.Add(ref score0, 3 * stride), g, Vector512.Create(Vector512.Sum(b3)));
        }

        ScoresByConversion<TWidth, THeads>(format, qs, group, scores, stride);
    }

    /// <summary>
    /// 1 bit on 512-bit vectors: the scores of every query head against <paramref name="groupCount"/>
    /// key groups, raising <paramref name="maxima"/> (unless empty) to each head's largest. Per
    /// group: the scales and zeros as floats once for all heads, then per four heads (or one) q∘s
    /// and the bias, and per pair of heads (or one) and word of codes the word's tables and lookups
    /// (<see cref="ScoreWordByTables"/>). Each head's running max and running sum stay in vectors
    /// over all groups and are reduced once at the end.
    /// </summary>
    [SkipLocalsInit] // every staged float is written before it is read
    static void OneBitKeyScores512(KiviFormat format, ReadOnlySpan<float> queries, int heads, ReadOnlySpan<byte> groups, int groupCount, Span<float> scores, int stride,
        Span<float> maxima)
    {
        int d = format.HeadDim, g = format.GroupSize, bytes = format.KeyGroupBytes;
        int channels = format.KeyWordsPerToken * format.ChannelsPerKeyWord; // d, or more when the last word is padded
        Span<float> scale = stackalloc float[channels];
        Span<float> zero = stackalloc float[d];
        Span<float> qs = stackalloc float[4 * channels];
        bool track = !maxima.IsEmpty;
        // Per head: [max, sum] of its scores so far, lane by lane. The sum is there to notice NaN and
        // infinite scores, which a lane max may drop (vmaxps returns its second operand when one is
        // NaN): the exact max of the written scores is then taken instead.
        Span<Vector512<float>> running = track ? stackalloc Vector512<float>[2 * heads] : [];
        for (int i = 0; i < running.Length; i += 2)
        {
            running[i] = Vector512.Create(float.NegativeInfinity);
            running[i + 1] = Vector512<float>.Zero;
        }
        ref float score0 = ref MemoryMarshal.GetReference(scores);
        for (int j = 0; j < groupCount; j++)
        {
            var group = groups.Slice(j * bytes, bytes);
            GroupScalesAndZeros(format, group, scale, zero);
            int h = 0;
            // Four query heads at a time share each load of 16 tokens' code words (GQA models have 2 to
            // 8 query heads per KV head); the rest one at a time.
            for (; h + 4 <= heads; h += 4)
                OneBitGroup512<FourHeads>(format, queries.Slice(h * d, 4 * d), scale, zero, qs, group, ref Unsafe.Add(ref score0, h * stride + j * g), stride,
                    track ? running.Slice(2 * h, 8) : []);
            for (; h < heads; h++)
                OneBitGroup512<OneHead>(format, queries.Slice(h * d, d), scale, zero, qs, group, ref Unsafe.Add(ref score0, h * stride + j * g), stride,
                    track ? running.Slice(2 * h, 2) : []);
        }
        if (!track) return;
        for (int h = 0; h < heads; h++)
            RaiseMax(ref maxima[h], HorizontalMax(running[2 * h]), Vector512.Sum(running[2 * h + 1]), scores.Slice(h * stride, groupCount * g));
    }

    /// <summary>
    /// One group's scores of <typeparamref name="THeads"/> query heads: q∘s into <paramref name="qs"/>,
    /// the scores started at each head's bias Σ_c q_c z_c, then each word's part added by table lookups.
    /// </summary>
    static void OneBitGroup512<THeads>(KiviFormat format, ReadOnlySpan<float> queries, ReadOnlySpan<float> scale, ReadOnlySpan<float> zero,
        Span<float> qs, ReadOnlySpan<byte> group, ref float score0, int stride, Span<Vector512<float>> running)
        where THeads : struct, IHeadCount
    {
        int n = THeads.Count, g = format.GroupSize, words = format.KeyWordsPerToken;
        int channels = words * format.ChannelsPerKeyWord;
        ref float qs0 = ref MemoryMarshal.GetReference(qs);
        StageHeads<THeads>(format, queries, scale, zero, qs, out var b0, out var b1, out var b2, out var b3);

        // The scores start at the bias: four heads' sums by one shuffle tree, chunk i holding head i's.
        if (n == 4)
        {
            var sums = AttentionQuads.ChunkTotals(b0, b1, b2, b3);
            StartScores(ref score0, g, Avx512F.Shuffle4x128(sums, sums, 0x00));
            StartScores(ref Unsafe.Add(ref score0, stride), g, Avx512F.Shuffle4x128(sums, sums, 0x55));
            StartScores(ref Unsafe.Add(ref score0, 2 * stride), g, Avx512F.Shuffle4x128(sums, sums, 0xAA));
            StartScores(ref Unsafe.Add(ref score0, 3 * stride), g, Avx512F.Shuffle4x128(sums, sums, 0xFF));
        }
        else StartScores(ref score0, g, Vector512.Create(Vector512.Sum(b0)));

        bool track = !running.IsEmpty;
        for (int pair = 0; pair < n; pair += 2)
            for (int w = 0; w < words; w++)
            {
                // The last word completes the scores: its pass raises the running maxima.
                bool last = track && w == words - 1;
                if (n == 4)
                    ScoreWordByTables<TwoHeads>(format, w, ref Unsafe.Add(ref qs0, pair * channels), channels, group, ref Unsafe.Add(ref score0, pair * stride), stride,
                        last, ref last ? ref running[2 * pair] : ref Unsafe.NullRef<Vector512<float>>());
                else
                    ScoreWordByTables<OneHead>(format, w, ref qs0, channels, group, ref score0, stride,
                        last, ref last ? ref running[0] : ref Unsafe.NullRef<Vector512<float>>());
            }
    }

    /// <summary>
    /// Each of <typeparamref name="THeads"/> query heads' q∘s into its row of <paramref name="qs"/>
    /// (rows over the padded channels, zero past the head), and its bias Σ_c q_c z_c as a vector
    /// of partial sums (<paramref name="b0"/> .. <paramref name="b3"/>, the unused ones zero): the
    /// scale and zero of each 16 channels loaded once for all heads.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void StageHeads<THeads>(KiviFormat format, ReadOnlySpan<float> queries, ReadOnlySpan<float> scale, ReadOnlySpan<float> zero, Span<float> qs,
        out Vector512<float> b0, out Vector512<float> b1, out Vector512<float> b2, out Vector512<float> b3)
        where THeads : struct, IHeadCount
    {
        int n = THeads.Count, d = format.HeadDim;
        int channels = format.KeyWordsPerToken * format.ChannelsPerKeyWord;
        ref float s0 = ref MemoryMarshal.GetReference(scale);
        ref float z0 = ref MemoryMarshal.GetReference(zero);
        ref float qs0 = ref MemoryMarshal.GetReference(qs);
        ref float q0 = ref MemoryMarshal.GetReference(queries);
        b0 = b1 = b2 = b3 = default;
        for (int c = 0; c < d; c += KiviFormat.Lanes)
        {
            var s = Vector512.LoadUnsafe(ref s0, (nuint)c);
            var z = Vector512.LoadUnsafe(ref z0, (nuint)c);
            var x = Vector512.LoadUnsafe(ref q0, (nuint)c);
            (x * s).StoreUnsafe(ref qs0, (nuint)c);
            b0 = Vector512.FusedMultiplyAdd(x, z, b0);
            if (n == 4)
            {
                x = Vector512.LoadUnsafe(ref q0, (nuint)(d + c));
                (x * s).StoreUnsafe(ref qs0, (nuint)(channels + c));
                b1 = Vector512.FusedMultiplyAdd(x, z, b1);
                x = Vector512.LoadUnsafe(ref q0, (nuint)(2 * d + c));
                (x * s).StoreUnsafe(ref qs0, (nuint)(2 * channels + c));
                b2 = Vector512.FusedMultiplyAdd(x, z, b2);
                x = Vector512.LoadUnsafe(ref q0, (nuint)(3 * d + c));
                (x * s).StoreUnsafe(ref qs0, (nuint)(3 * channels + c));
                b3 = Vector512.FusedMultiplyAdd(x, z, b3);
            }
        }
        for (int c = d; c < channels; c += KiviFormat.Lanes)
            for (int i = 0; i < n; i++) Vector512<float>.Zero.StoreUnsafe(ref qs0, (nuint)(i * channels + c));
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void StartScores(ref float scores, int g, Vector512<float> bias)
    {
        for (int t = 0; t < g; t += KiviFormat.Lanes) bias.StoreUnsafe(ref scores, (nuint)t);
    }

    /// <summary>
    /// Word <paramref name="w"/>'s part of the scores of one or two heads (q∘s rows <paramref name="channels"/>
    /// apart, score rows <paramref name="stride"/> apart): per word the 8 tables of each head (one per
    /// nibble, 4 channels), then per 16 tokens one lookup and add per nibble and head. The tables live
    /// in registers: stored to memory and read back at once by the lookups, they made the kernel wait
    /// on the stores (AttentionBench specache-1 lost a sixth of a step that way). With
    /// <paramref name="track"/>, each head's [max, sum] vectors at <paramref name="running"/> take
    /// the finished scores.
    /// </summary>
    static void ScoreWordByTables<THeads>(KiviFormat format, int w, ref float qs, int channels, ReadOnlySpan<byte> group, ref float score0, int stride,
        bool track, ref Vector512<float> running)
        where THeads : struct, IHeadCount
    {
        bool two = THeads.Count == 2;
        int g = format.GroupSize, words = format.KeyWordsPerToken;
        ref int codes = ref Unsafe.As<byte, int>(ref Unsafe.Add(ref MemoryMarshal.GetReference(group), format.KeyCodesOffset));
        var mask = Vector512.Create(1);
        // Lane e of pattern j is the code (bit j) of the j-th channel of a nibble whose value is e.
        var p0 = Vector512.ConvertToSingle(Vector512<int>.Indices & mask);
        var p1 = Vector512.ConvertToSingle((Vector512<int>.Indices >>> 1) & mask);
        var p2 = Vector512.ConvertToSingle((Vector512<int>.Indices >>> 2) & mask);
        var p3 = Vector512.ConvertToSingle((Vector512<int>.Indices >>> 3) & mask);
        ref float q = ref Unsafe.Add(ref qs, w * format.ChannelsPerKeyWord);
        ref float r = ref Unsafe.Add(ref q, channels);
        var t0 = Table<OneBit>(ref q, p0, p1, p2, p3);
        var t1 = Table<OneBit>(ref Unsafe.Add(ref q, 4), p0, p1, p2, p3);
        var t2 = Table<OneBit>(ref Unsafe.Add(ref q, 8), p0, p1, p2, p3);
        var t3 = Table<OneBit>(ref Unsafe.Add(ref q, 12), p0, p1, p2, p3);
        var t4 = Table<OneBit>(ref Unsafe.Add(ref q, 16), p0, p1, p2, p3);
        var t5 = Table<OneBit>(ref Unsafe.Add(ref q, 20), p0, p1, p2, p3);
        var t6 = Table<OneBit>(ref Unsafe.Add(ref q, 24), p0, p1, p2, p3);
        var t7 = Table<OneBit>(ref Unsafe.Add(ref q, 28), p0, p1, p2, p3);
        Vector512<float> u0 = default, u1 = default, u2 = default, u3 = default, u4 = default, u5 = default, u6 = default, u7 = default;
        if (two)
        {
            u0 = Table<OneBit>(ref r, p0, p1, p2, p3);
            u1 = Table<OneBit>(ref Unsafe.Add(ref r, 4), p0, p1, p2, p3);
            u2 = Table<OneBit>(ref Unsafe.Add(ref r, 8), p0, p1, p2, p3);
            u3 = Table<OneBit>(ref Unsafe.Add(ref r, 12), p0, p1, p2, p3);
            u4 = Table<OneBit>(ref Unsafe.Add(ref r, 16), p0, p1, p2, p3);
            u5 = Table<OneBit>(ref Unsafe.Add(ref r, 20), p0, p1, p2, p3);
            u6 = Table<OneBit>(ref Unsafe.Add(ref r, 24), p0, p1, p2, p3);
            u7 = Table<OneBit>(ref Unsafe.Add(ref r, 28), p0, p1, p2, p3);
        }
        Vector512<float> maxA = default, sumA = default, maxB = default, sumB = default;
        if (track)
        {
            maxA = running;
            sumA = Unsafe.Add(ref running, 1);
            if (two)
            {
                maxB = Unsafe.Add(ref running, 2);
                sumB = Unsafe.Add(ref running, 3);
            }
        }
        for (int t = 0; t < g; t += KiviFormat.Lanes)
        {
            // 16 tokens' word w; a permute reads only the low 4 bits of each lane's index, so
            // shifting the word by 4 each time brings the next nibble into place.
            var i0 = Vector512.LoadUnsafe(ref codes, (nuint)((t / KiviFormat.Lanes * words + w) * KiviFormat.Lanes));
            var i1 = i0 >>> 4;
            var i2 = i0 >>> 8;
            var i3 = i0 >>> 12;
            var i4 = i0 >>> 16;
            var i5 = i0 >>> 20;
            var i6 = i0 >>> 24;
            var i7 = i0 >>> 28;
            var a = Vector512.LoadUnsafe(ref score0, (nuint)t)
                + ((Avx512F.PermuteVar16x32(t0, i0) + Avx512F.PermuteVar16x32(t1, i1)) + (Avx512F.PermuteVar16x32(t2, i2) + Avx512F.PermuteVar16x32(t3, i3)))
                + ((Avx512F.PermuteVar16x32(t4, i4) + Avx512F.PermuteVar16x32(t5, i5)) + (Avx512F.PermuteVar16x32(t6, i6) + Avx512F.PermuteVar16x32(t7, i7)));
            a.StoreUnsafe(ref score0, (nuint)t);
            if (track)
            {
                maxA = Avx512F.Max(maxA, a);
                sumA += a;
            }
            if (two)
            {
                var b = Vector512.LoadUnsafe(ref score0, (nuint)(stride + t))
                    + ((Avx512F.PermuteVar16x32(u0, i0) + Avx512F.PermuteVar16x32(u1, i1)) + (Avx512F.PermuteVar16x32(u2, i2) + Avx512F.PermuteVar16x32(u3, i3)))
                    + ((Avx512F.PermuteVar16x32(u4, i4) + Avx512F.PermuteVar16x32(u5, i5)) + (Avx512F.PermuteVar16x32(u6, i6) + Avx512F.PermuteVar16x32(u7, i7)));
                b.StoreUnsafe(ref score0, (nuint)(stride + t));
                if (track)
                {
                    maxB = Avx512F.Max(maxB, b);
                    sumB += b;
                }
            }
        }
        if (track)
        {
            running = maxA;
            Unsafe.Add(ref running, 1) = sumA;
            if (two)
            {
                Unsafe.Add(ref running, 2) = maxB;
                Unsafe.Add(ref running, 3) = sumB;
            }
        }
    }

    /// <summary>
    /// A head's <paramref name="maximum"/> raised to the max of its scores from a kernel's running lane max and
    /// lane sum: the exact max of the written <paramref name="row"/> instead when the sum is not finite (a
    /// lane max may have dropped a NaN or an infinity).
    /// </summary>
    static void RaiseMax(ref float maximum, float laneMax, float laneSum, ReadOnlySpan<float> row)
    {
        if (!float.IsFinite(laneSum)) laneMax = TensorPrimitives.Max(row);
        maximum = MathF.Max(maximum, laneMax);
    }

    /// <summary>The largest lane (NaN if any lane is NaN).</summary>
    static float HorizontalMax(Vector512<float> v) => HorizontalMax(Vector256.Max(v.GetLower(), v.GetUpper()));

    /// <summary>The largest lane (NaN if any lane is NaN).</summary>
    static float HorizontalMax(Vector256<float> v)
    {
        var quarter = Vector128.Max(v.GetLower(), v.GetUpper());
        return MathF.Max(MathF.Max(quarter[0], quarter[1]), MathF.Max(quarter[2], quarter[3]));
    }

    /// <summary>
    /// 2 and 4 bits: adds Σ_c (q_c s_c) code_t,c to the scores, per channel one shift, mask and
    /// conversion of 16 tokens' codes and one multiply-add per head.
    /// </summary>
    static void ScoresByConversion<TWidth, THeads>(KiviFormat format, Span<float> qs, ReadOnlySpan<byte> group, Span<float> scores, int stride)
        where TWidth : struct, ICodeWidth
        where THeads : struct, IHeadCount
    {
        int n = THeads.Count, g = format.GroupSize, words = format.KeyWordsPerToken;
        int perWord = format.ChannelsPerKeyWord, channels = words * perWord;
        ref float qs0 = ref MemoryMarshal.GetReference(qs);
        ref float score0 = ref MemoryMarshal.GetReference(scores);
        ref int codes = ref Unsafe.As<byte, int>(ref Unsafe.Add(ref MemoryMarshal.GetReference(group), format.KeyCodesOffset));
        var mask = Vector512.Create((1 << TWidth.Bits) - 1);
        // 2 and 4 bits: a table serves only 2 or 1 channels, and building it per 32-token group
        // cost more than it saved (AttentionBench kivi-2, G=32: 59-65 ms per step with tables, 52-54 so), so each
        // channel's codes become floats, one shift, mask and conversion per channel for all heads.
        for (int w = 0; w < words; w++)
            for (int t = 0; t < g; t += KiviFormat.Lanes)
            {
                var word = Vector512.LoadUnsafe(ref codes, (nuint)((t / KiviFormat.Lanes * words + w) * KiviFormat.Lanes));
                var a0 = Vector512.LoadUnsafe(ref score0, (nuint)t);
                Vector512<float> a1 = default, a2 = default, a3 = default;
                if (n == 4)
                {
                    a1 = Vector512.LoadUnsafe(ref score0, (nuint)(stride + t));
                    a2 = Vector512.LoadUnsafe(ref score0, (nuint)(2 * stride + t));
                    a3 = Vector512.LoadUnsafe(ref score0, (nuint)(3 * stride + t));
                }
                ref float qc = ref Unsafe.Add(ref qs0, w * perWord);
                for (int j = 0; j < perWord; j++)
                {
                    var x = Vector512.ConvertToSingle(word & mask);
                    word >>>= TWidth.Bits;
                    a0 = Vector512.FusedMultiplyAdd(x, Vector512.Create(qc), a0);
                    if (n == 4)
                    {
                        a1 = Vector512.FusedMultiplyAdd(x, Vector512.Create(Unsafe.Add(ref qc, channels)), a1);
                        a2 = Vector512.FusedMultiplyAdd(x, Vector512.Create(Unsafe.Add(ref qc, 2 * channels)), a2);
                        a3 = Vector512.FusedMultiplyAdd(x, Vector512.Create(Unsafe.Add(ref qc, 3 * channels)), a3);
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

    /// <summary>The 16 sums of q∘s over the channels of one nibble (from <paramref name="qs"/>), entry e taking each channel's code from e's bits.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Vector512<float> Table<TWidth>(ref float qs, Vector512<float> p0, Vector512<float> p1, Vector512<float> p2, Vector512<float> p3)
        where TWidth : struct, ICodeWidth
    {
        var table = p0 * Vector512.Create(qs);
        if (TWidth.Bits <= 2) table = Vector512.FusedMultiplyAdd(p1, Vector512.Create(Unsafe.Add(ref qs, 1)), table);
        if (TWidth.Bits == 1)
        {
            table = Vector512.FusedMultiplyAdd(p2, Vector512.Create(Unsafe.Add(ref qs, 2)), table);
            table = Vector512.FusedMultiplyAdd(p3, Vector512.Create(Unsafe.Add(ref qs, 3)), table);
        }
        return table;
    }
}

/// <summary>A number of query heads as a type, so a kernel is compiled once per count with its registers fixed.</summary>
internal interface IHeadCount
{
    static abstract int Count { get; }
}

internal readonly struct OneHead : IHeadCount { public static int Count => 1; }
internal readonly struct TwoHeads : IHeadCount { public static int Count => 2; }
internal readonly struct FourHeads : IHeadCount { public static int Count => 4; }
internal readonly struct EightHeads : IHeadCount { public static int Count => 8; }
