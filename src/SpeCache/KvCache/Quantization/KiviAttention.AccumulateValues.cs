using System.Buffers.Binary;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using SpeCache.Quants;

namespace SpeCache.KvCache.Quantization;

public static partial class KiviAttention
{
    /// <summary>
    /// Adds Σ_t p_h,t v_t into each query head's row of <paramref name="output"/> (heads × HeadDim),
    /// v_t the dequantized value of the t-th of n value tokens kept in the value blocks
    /// <paramref name="values"/> (<see cref="KiviFormat"/>); <paramref name="probabilities"/> is
    /// heads × n, head-major. The query heads are those sharing this KV head (GQA), so the codes are
    /// read once for all.
    /// </summary>
    /// <remarks>
    /// With v_t,c = z_t,g + s_t,g code_t,c (g the channel's group): o_c += Σ_t (p_t s_t,g) code_t,c + Σ_t p_t z_t,g.
    /// The products p_t s_t,g are formed once per token and group; the p_t z_t,g terms only depend on
    /// the group, so they are summed over all tokens first and added to each channel once at the end.
    /// The vector kernel reads a channel's codes of a run of 4/Bits tokens as one nibble, so per run
    /// and head it tabulates the 16 possible sums of those tokens' p_t s_t and looks up 16 channels
    /// with one permute: at 1 bit, one permute and add per 4 tokens where converting codes to floats
    /// cost a conversion per token and an FMA per token and head (perf had that kernel and its scale
    /// staging at 36 % of a 32K-token specache decode step). At 1 bit with four heads (Llama's GQA
    /// group) a block's 16 tables sit in registers, and at 2 bits two heads' 16: written to memory and
    /// read back at once, the reads waited on the stores (KiviBench, head 64, 32K tokens: 1 bit
    /// 146/121 -> 88 us, 2 bits G=32 227-293 -> 143-149 us).
    /// </remarks>
    public static void AccumulateValues(KiviFormat format, ReadOnlySpan<float> probabilities, ReadOnlySpan<byte> values, Span<float> output)
    {
        int n = TokensPerHead(format, probabilities, output);
        AccumulateValues(format, probabilities, n, n, values, output);
    }

    /// <summary>
    /// <see cref="AccumulateValues(KiviFormat, ReadOnlySpan{float}, ReadOnlySpan{byte}, Span{float})"/> over
    /// <paramref name="count"/> value tokens with head h's probabilities at
    /// <paramref name="probabilities"/>[h × <paramref name="stride"/>], so a caller's rows over a longer
    /// context (softmax weights of the residual after the low-bit tokens) are read in place.
    /// </summary>
    public static void AccumulateValues(KiviFormat format, ReadOnlySpan<float> probabilities, int count, int stride, ReadOnlySpan<byte> values, Span<float> output) =>
        AccumulateValues(format, probabilities, count, stride, values, output, BestKernel(format));

    /// <summary>The strided <c>AccumulateValues</c> by a chosen kernel (benches and tests compare them); it must <see cref="Runs"/> here.</summary>
    public static void AccumulateValues(KiviFormat format, ReadOnlySpan<float> probabilities, int count, int stride, ReadOnlySpan<byte> values, Span<float> output, KiviKernel kernel)
    {
        int heads = CheckAccumulateValues(format, probabilities, count, stride, values, output);
        CheckKernel(kernel, format);
        switch (kernel, format.Bits)
        {
            case (KiviKernel.Vector512, 1): AccumulateValuesVector<OneBit>(format, heads, probabilities, count, stride, values, output); break;
            case (KiviKernel.Vector512, 2): AccumulateValuesVector<TwoBits>(format, heads, probabilities, count, stride, values, output); break;
            case (KiviKernel.Vector512, _): AccumulateValuesVector<FourBits>(format, heads, probabilities, count, stride, values, output); break;
            case (KiviKernel.Vector256, 1): AccumulateValues256<OneBit>(format, heads, probabilities, count, stride, values, output); break;
            case (KiviKernel.Vector256, 2): AccumulateValues256<TwoBits>(format, heads, probabilities, count, stride, values, output); break;
            case (KiviKernel.Vector256, _): AccumulateValues256<FourBits>(format, heads, probabilities, count, stride, values, output); break;
            case (KiviKernel.Vector128, 1): AccumulateValues128<OneBit>(format, heads, probabilities, count, stride, values, output); break;
            case (KiviKernel.Vector128, 2): AccumulateValues128<TwoBits>(format, heads, probabilities, count, stride, values, output); break;
            case (KiviKernel.Vector128, _): AccumulateValues128<FourBits>(format, heads, probabilities, count, stride, values, output); break;
            default: AccumulateValuesScalar(format, probabilities, count, stride, values, output); break;
        }
    }

    /// <summary>Scalar reference of <see cref="AccumulateValues(KiviFormat, ReadOnlySpan{float}, ReadOnlySpan{byte}, Span{float})"/>.</summary>
    public static void AccumulateValuesScalar(KiviFormat format, ReadOnlySpan<float> probabilities, ReadOnlySpan<byte> values, Span<float> output)
    {
        int n = TokensPerHead(format, probabilities, output);
        AccumulateValuesScalar(format, probabilities, n, n, values, output);
    }

    /// <summary>Scalar reference of the strided <c>AccumulateValues</c>.</summary>
    public static void AccumulateValuesScalar(KiviFormat format, ReadOnlySpan<float> probabilities, int count, int stride, ReadOnlySpan<byte> values, Span<float> output)
    {
        int heads = CheckAccumulateValues(format, probabilities, count, stride, values, output);
        int d = format.HeadDim, gv = format.ValueGroupSize;
        for (int h = 0; h < heads; h++)
            for (int t = 0; t < count; t++)
            {
                float p = probabilities[h * stride + t];
                for (int c = 0; c < d; c++)
                {
                    long scaleAt = format.ValueScaleOffset(t, c / gv);
                    float scale = (float)BinaryPrimitives.ReadHalfLittleEndian(values[(int)scaleAt..]);
                    float zero = (float)BinaryPrimitives.ReadHalfLittleEndian(values[(int)(scaleAt + format.ValueZeroDistance)..]);
                    output[h * d + c] += MathF.FusedMultiplyAdd(p * scale, KiviCodes.ReadValue(values, format, t, c), p * zero);
                }
            }
    }

    static int CheckHeads(KiviFormat format, Span<float> output)
    {
        if (format.HeadDim == 0) throw new ArgumentException("the KIVI format is uninitialized (default)", nameof(format));
        int heads = output.Length / format.HeadDim;
        if (heads == 0 || output.Length != heads * format.HeadDim)
            throw new ArgumentException($"the output must be a whole number of {format.HeadDim}-float heads, not {output.Length} floats", nameof(output));
        return heads;
    }

    /// <summary>Tokens of head-major probabilities packed without gaps, one row per head of the output.</summary>
    static int TokensPerHead(KiviFormat format, ReadOnlySpan<float> probabilities, Span<float> output)
    {
        int heads = CheckHeads(format, output);
        if (probabilities.Length % heads != 0)
            throw new ArgumentException($"{probabilities.Length} probabilities do not split into {heads} heads", nameof(probabilities));
        return probabilities.Length / heads;
    }

    static int CheckAccumulateValues(KiviFormat format, ReadOnlySpan<float> probabilities, int count, int stride, ReadOnlySpan<byte> values, Span<float> output)
    {
        int heads = CheckHeads(format, output);
        if (count < 0 || stride < count)
            throw new ArgumentOutOfRangeException(nameof(stride), $"{count} tokens at a stride of {stride} probabilities between heads");
        if (probabilities.Length < (heads - 1L) * stride + count)
            throw new ArgumentException($"{heads} heads x {count} tokens at a stride of {stride} need {(heads - 1L) * stride + count} probabilities, got {probabilities.Length}", nameof(probabilities));
        if (values.Length < format.ValueBytes(count))
            throw new ArgumentException($"{count} value tokens are {format.ValueBytes(count)} bytes of value blocks, got {values.Length}", nameof(values));
        return heads;
    }

    static void AccumulateValuesVector<TWidth>(KiviFormat format, int heads, ReadOnlySpan<float> probabilities, int count, int stride, ReadOnlySpan<byte> values, Span<float> output)
        where TWidth : struct, ICodeWidth
    {
        if (count == 0) return;
        int d = format.HeadDim;
        int h = 0;
        // Four query heads at a time share each expansion of a run's nibbles; the rest one at a time.
        for (; h + 4 <= heads; h += 4)
            AccumulateHeads<TWidth, FourHeads>(format, probabilities.Slice(h * stride, 3 * stride + count), count, stride, values, output.Slice(h * d, 4 * d));
        for (; h < heads; h++)
            AccumulateHeads<TWidth, OneHead>(format, probabilities.Slice(h * stride, count), count, stride, values, output.Slice(h * d, d));
    }

    /// <summary>Block <paramref name="start"/>/16's p_t s_t into <paramref name="scaled"/> and its p_t z_t added to the running <paramref name="bias"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void StageBlock<THeads>(KiviFormat format, ref float p0, int count, int stride, ReadOnlySpan<byte> values, int start, ref float scaled, ref float bias, Span<float> partial)
        where THeads : struct, IHeadCount
    {
        const int lanes = KiviFormat.BlockTokens;
        int heads = THeads.Count, groups = format.ValueGroupsPerToken;
        int n = Math.Min(lanes, count - start);
        ref ushort halves = ref Unsafe.As<byte, ushort>(ref Unsafe.Add(ref MemoryMarshal.GetReference(values), (nint)start / lanes * format.ValueBlockBytes + format.ValueScalesOffset));
        // A part-filled block's empty lanes may hold anything: their scales, zeros and probabilities count as 0.
        var valid = Vector512.LessThan(Vector512<int>.Indices, Vector512.Create(n)).AsSingle();
        for (int grp = 0; grp < groups; grp++)
        {
            var s = QuantMath.HalfToSingle(Vector512.WidenLower(Vector256.LoadUnsafe(ref halves, (nuint)(grp * lanes)).ToVector512Unsafe())) & valid;
            var z = QuantMath.HalfToSingle(Vector512.WidenLower(Vector256.LoadUnsafe(ref halves, (nuint)((groups + grp) * lanes)).ToVector512Unsafe())) & valid;
            for (int i = 0; i < heads; i++)
            {
                Vector512<float> p;
                if (n == lanes) p = Vector512.LoadUnsafe(ref p0, (nuint)(i * stride + start));
                else
                {
                    // By hand, not Span.CopyTo: a call here would make the JIT keep every vector of
                    // the method on the stack (all vector registers are the caller's to save).
                    for (int t = 0; t < lanes; t++) partial[t] = t < n ? Unsafe.Add(ref p0, i * stride + start + t) : 0;
                    p = Vector512.LoadUnsafe(ref MemoryMarshal.GetReference(partial));
                }
                int at = (i * groups + grp) * lanes;
                (p * s).StoreUnsafe(ref scaled, (nuint)at);
                Vector512.FusedMultiplyAdd(p, z, Vector512.LoadUnsafe(ref bias, (nuint)at)).StoreUnsafe(ref bias, (nuint)at);
            }
        }
    }

    /// <summary>
    /// 1 bit, four heads: one group's 16 tables (4 runs x 4 heads) built into registers, then each
    /// 16-channel chunk of channels [first, end) looked up from them.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void LookUpOneBitFourHeads(ref float ps, int headStride, ref byte block, int runBytes, int first, int end, int d, ref float o,
        Vector512<float> p0, Vector512<float> p1, Vector512<float> p2, Vector512<float> p3)
    {
        ref float h1 = ref Unsafe.Add(ref ps, headStride);
        ref float h2 = ref Unsafe.Add(ref ps, 2 * headStride);
        ref float h3 = ref Unsafe.Add(ref ps, 3 * headStride);
        var t00 = Table<OneBit>(ref ps, p0, p1, p2, p3);
        var t01 = Table<OneBit>(ref Unsafe.Add(ref ps, 4), p0, p1, p2, p3);
        var t02 = Table<OneBit>(ref Unsafe.Add(ref ps, 8), p0, p1, p2, p3);
        var t03 = Table<OneBit>(ref Unsafe.Add(ref ps, 12), p0, p1, p2, p3);
        var t10 = Table<OneBit>(ref h1, p0, p1, p2, p3);
        var t11 = Table<OneBit>(ref Unsafe.Add(ref h1, 4), p0, p1, p2, p3);
        var t12 = Table<OneBit>(ref Unsafe.Add(ref h1, 8), p0, p1, p2, p3);
        var t13 = Table<OneBit>(ref Unsafe.Add(ref h1, 12), p0, p1, p2, p3);
        var t20 = Table<OneBit>(ref h2, p0, p1, p2, p3);
        var t21 = Table<OneBit>(ref Unsafe.Add(ref h2, 4), p0, p1, p2, p3);
        var t22 = Table<OneBit>(ref Unsafe.Add(ref h2, 8), p0, p1, p2, p3);
        var t23 = Table<OneBit>(ref Unsafe.Add(ref h2, 12), p0, p1, p2, p3);
        var t30 = Table<OneBit>(ref h3, p0, p1, p2, p3);
        var t31 = Table<OneBit>(ref Unsafe.Add(ref h3, 4), p0, p1, p2, p3);
        var t32 = Table<OneBit>(ref Unsafe.Add(ref h3, 8), p0, p1, p2, p3);
        var t33 = Table<OneBit>(ref Unsafe.Add(ref h3, 12), p0, p1, p2, p3);
        for (int c = first; c < end; c += KiviFormat.Lanes)
        {
            ref byte nibbles = ref Unsafe.Add(ref block, c / 2);
            var i0 = KiviCodes.Nibbles16(ref nibbles);
            var i1 = KiviCodes.Nibbles16(ref Unsafe.Add(ref nibbles, runBytes));
            var i2 = KiviCodes.Nibbles16(ref Unsafe.Add(ref nibbles, 2 * runBytes));
            var i3 = KiviCodes.Nibbles16(ref Unsafe.Add(ref nibbles, 3 * runBytes));
            var a0 = Vector512.LoadUnsafe(ref o, (nuint)c)
                + (Avx512F.PermuteVar16x32(t00, i0) + Avx512F.PermuteVar16x32(t01, i1)) + (Avx512F.PermuteVar16x32(t02, i2) + Avx512F.PermuteVar16x32(t03, i3));
            var a1 = Vector512.LoadUnsafe(ref o, (nuint)(d + c))
                + (Avx512F.PermuteVar16x32(t10, i0) + Avx512F.PermuteVar16x32(t11, i1)) + (Avx512F.PermuteVar16x32(t12, i2) + Avx512F.PermuteVar16x32(t13, i3));
            var a2 = Vector512.LoadUnsafe(ref o, (nuint)(2 * d + c))
                + (Avx512F.PermuteVar16x32(t20, i0) + Avx512F.PermuteVar16x32(t21, i1)) + (Avx512F.PermuteVar16x32(t22, i2) + Avx512F.PermuteVar16x32(t23, i3));
            var a3 = Vector512.LoadUnsafe(ref o, (nuint)(3 * d + c))
                + (Avx512F.PermuteVar16x32(t30, i0) + Avx512F.PermuteVar16x32(t31, i1)) + (Avx512F.PermuteVar16x32(t32, i2) + Avx512F.PermuteVar16x32(t33, i3));
            a0.StoreUnsafe(ref o, (nuint)c);
            a1.StoreUnsafe(ref o, (nuint)(d + c));
            a2.StoreUnsafe(ref o, (nuint)(2 * d + c));
            a3.StoreUnsafe(ref o, (nuint)(3 * d + c));
        }
    }

    /// <summary>
    /// 2 bits, two heads: one group's 16 tables (8 runs of 2 tokens x 2 heads) built into registers,
    /// then each 16-channel chunk of channels [first, end) looked up from them.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void LookUpTwoBitsTwoHeads(ref float ps, int headStride, ref byte block, int runBytes, int first, int end, int d, ref float o,
        Vector512<float> p0, Vector512<float> p1, Vector512<float> p2, Vector512<float> p3)
    {
        ref float h1 = ref Unsafe.Add(ref ps, headStride);
        var t0 = Table<TwoBits>(ref ps, p0, p1, p2, p3);
        var t1 = Table<TwoBits>(ref Unsafe.Add(ref ps, 2), p0, p1, p2, p3);
        var t2 = Table<TwoBits>(ref Unsafe.Add(ref ps, 4), p0, p1, p2, p3);
        var t3 = Table<TwoBits>(ref Unsafe.Add(ref ps, 6), p0, p1, p2, p3);
        var t4 = Table<TwoBits>(ref Unsafe.Add(ref ps, 8), p0, p1, p2, p3);
        var t5 = Table<TwoBits>(ref Unsafe.Add(ref ps, 10), p0, p1, p2, p3);
        var t6 = Table<TwoBits>(ref Unsafe.Add(ref ps, 12), p0, p1, p2, p3);
        var t7 = Table<TwoBits>(ref Unsafe.Add(ref ps, 14), p0, p1, p2, p3);
        var u0 = Table<TwoBits>(ref h1, p0, p1, p2, p3);
        var u1 = Table<TwoBits>(ref Unsafe.Add(ref h1, 2), p0, p1, p2, p3);
        var u2 = Table<TwoBits>(ref Unsafe.Add(ref h1, 4), p0, p1, p2, p3);
        var u3 = Table<TwoBits>(ref Unsafe.Add(ref h1, 6), p0, p1, p2, p3);
        var u4 = Table<TwoBits>(ref Unsafe.Add(ref h1, 8), p0, p1, p2, p3);
        var u5 = Table<TwoBits>(ref Unsafe.Add(ref h1, 10), p0, p1, p2, p3);
        var u6 = Table<TwoBits>(ref Unsafe.Add(ref h1, 12), p0, p1, p2, p3);
        var u7 = Table<TwoBits>(ref Unsafe.Add(ref h1, 14), p0, p1, p2, p3);
        for (int c = first; c < end; c += KiviFormat.Lanes)
        {
            ref byte nibbles = ref Unsafe.Add(ref block, c / 2);
            var i0 = KiviCodes.Nibbles16(ref nibbles);
            var i1 = KiviCodes.Nibbles16(ref Unsafe.Add(ref nibbles, runBytes));
            var i2 = KiviCodes.Nibbles16(ref Unsafe.Add(ref nibbles, 2 * runBytes));
            var i3 = KiviCodes.Nibbles16(ref Unsafe.Add(ref nibbles, 3 * runBytes));
            var a = (Avx512F.PermuteVar16x32(t0, i0) + Avx512F.PermuteVar16x32(t1, i1)) + (Avx512F.PermuteVar16x32(t2, i2) + Avx512F.PermuteVar16x32(t3, i3));
            var b = (Avx512F.PermuteVar16x32(u0, i0) + Avx512F.PermuteVar16x32(u1, i1)) + (Avx512F.PermuteVar16x32(u2, i2) + Avx512F.PermuteVar16x32(u3, i3));
            i0 = KiviCodes.Nibbles16(ref Unsafe.Add(ref nibbles, 4 * runBytes));
            i1 = KiviCodes.Nibbles16(ref Unsafe.Add(ref nibbles, 5 * runBytes));
            i2 = KiviCodes.Nibbles16(ref Unsafe.Add(ref nibbles, 6 * runBytes));
            i3 = KiviCodes.Nibbles16(ref Unsafe.Add(ref nibbles, 7 * runBytes));
            a += (Avx512F.PermuteVar16x32(t4, i0) + Avx512F.PermuteVar16x32(t5, i1)) + (Avx512F.PermuteVar16x32(t6, i2) + Avx512F.PermuteVar16x32(t7, i3));
            b += (Avx512F.PermuteVar16x32(u4, i0) + Avx512F.PermuteVar16x32(u5, i1)) + (Avx512F.PermuteVar16x32(u6, i2) + Avx512F.PermuteVar16x32(u7, i3));
            (Vector512.LoadUnsafe(ref o, (nuint)c) + a).StoreUnsafe(ref o, (nuint)c);
            (Vector512.LoadUnsafe(ref o, (nuint)(d + c)) + b).StoreUnsafe(ref o, (nuint)(d + c));
        }
    }

    [SkipLocalsInit] // every staged float is written before it is read
    static void AccumulateHeads<TWidth, THeads>(KiviFormat format, ReadOnlySpan<float> probabilities, int count, int stride, ReadOnlySpan<byte> values, Span<float> output)
        where TWidth : struct, ICodeWidth
        where THeads : struct, IHeadCount
    {
        const int lanes = KiviFormat.BlockTokens; // 16 tokens of a block, 16 channels of a chunk
        int heads = THeads.Count, d = format.HeadDim, gv = format.ValueGroupSize, groups = format.ValueGroupsPerToken;
        int runTokens = 4 / TWidth.Bits, runs = lanes / runTokens, runBytes = d / 2, blockBytes = format.ValueBlockBytes;
        // p_t s_t of two blocks, [block & 1][head][group][token]: a block is staged while the one before
        // it is looked up, so the tables read stores that have long left the store queue.
        int blockStaged = heads * groups * lanes;
        Span<float> scaled = stackalloc float[2 * blockStaged];
        Span<float> biases = stackalloc float[heads * groups * lanes];  // running Σ p_t z_t, [head][group][lane]
        Span<float> tables = stackalloc float[heads * runs * lanes];    // one group's tables, [head][run][entry]
        Span<float> partial = stackalloc float[lanes];
        biases.Clear();
        ref float bias0 = ref MemoryMarshal.GetReference(biases);
        ref float table0 = ref MemoryMarshal.GetReference(tables);
        ref float p0 = ref MemoryMarshal.GetReference(probabilities);
        ref float o = ref MemoryMarshal.GetReference(output);
        int headTables = runs * lanes;

        var mask = Vector512.Create((1 << TWidth.Bits) - 1);
        var pattern0 = Vector512.ConvertToSingle(Vector512<int>.Indices & mask);
        var pattern1 = Vector512.ConvertToSingle((Vector512<int>.Indices >>> TWidth.Bits) & mask);
        var pattern2 = Vector512.ConvertToSingle((Vector512<int>.Indices >>> (2 * TWidth.Bits)) & mask);
        var pattern3 = Vector512.ConvertToSingle((Vector512<int>.Indices >>> (3 * TWidth.Bits)) & mask);

        StageBlock<THeads>(format, ref p0, count, stride, values, 0, ref MemoryMarshal.GetReference(scaled), ref bias0, partial);
        for (int start = 0; start < count; start += lanes)
        {
            int b = start / lanes;
            ref byte block = ref Unsafe.Add(ref MemoryMarshal.GetReference(values), (nint)b * blockBytes);
            if (start + lanes < count)
                StageBlock<THeads>(format, ref p0, count, stride, values, start + lanes, ref scaled[((b + 1) & 1) * blockStaged], ref bias0, partial);
            ref float scaled0 = ref scaled[(b & 1) * blockStaged];
            if (TWidth.Bits == 1 && heads == 4)
            {
                for (int grp = 0; grp < groups; grp++)
                    LookUpOneBitFourHeads(ref Unsafe.Add(ref scaled0, grp * lanes), groups * lanes, ref block, runBytes, grp * gv, (grp + 1) * gv, d, ref o,
                        pattern0, pattern1, pattern2, pattern3);
                continue;
            }
            if (TWidth.Bits == 2 && heads == 4)
            {
                for (int grp = 0; grp < groups; grp++)
                    for (int pair = 0; pair < 4; pair += 2)
                        LookUpTwoBitsTwoHeads(ref Unsafe.Add(ref scaled0, (pair * groups + grp) * lanes), groups * lanes, ref block, runBytes, grp * gv, (grp + 1) * gv, d,
                            ref Unsafe.Add(ref o, pair * d), pattern0, pattern1, pattern2, pattern3);
                continue;
            }
            for (int grp = 0; grp < groups; grp++)
            {
                for (int i = 0; i < heads; i++)
                {
                    ref float ps = ref Unsafe.Add(ref scaled0, (i * groups + grp) * lanes);
                    for (int run = 0; run < runs; run++)
                        Table<TWidth>(ref Unsafe.Add(ref ps, run * runTokens), pattern0, pattern1, pattern2, pattern3)
                            .StoreUnsafe(ref table0, (nuint)(i * headTables + run * lanes));
                }
                for (int c = grp * gv; c < (grp + 1) * gv; c += lanes)
                {
                    var a0 = Vector512.LoadUnsafe(ref o, (nuint)c);
                    Vector512<float> a1 = default, a2 = default, a3 = default;
                    if (heads == 4)
                    {
                        a1 = Vector512.LoadUnsafe(ref o, (nuint)(d + c));
                        a2 = Vector512.LoadUnsafe(ref o, (nuint)(2 * d + c));
                        a3 = Vector512.LoadUnsafe(ref o, (nuint)(3 * d + c));
                    }
                    ref byte nibbles = ref Unsafe.Add(ref block, c / 2); // run 0's nibbles of channels c .. c+15
                    ref float tn = ref table0;
                    for (int run = 0; run < runs; run++)
                    {
                        var index = KiviCodes.Nibbles16(ref Unsafe.Add(ref nibbles, run * runBytes));
                        a0 += Avx512F.PermuteVar16x32(Vector512.LoadUnsafe(ref tn), index);
                        if (heads == 4)
                        {
                            a1 += Avx512F.PermuteVar16x32(Vector512.LoadUnsafe(ref tn, (nuint)headTables), index);
                            a2 += Avx512F.PermuteVar16x32(Vector512.LoadUnsafe(ref tn, (nuint)(2 * headTables)), index);
                            a3 += Avx512F.PermuteVar16x32(Vector512.LoadUnsafe(ref tn, (nuint)(3 * headTables)), index);
                        }
                        tn = ref Unsafe.Add(ref tn, lanes);
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
        }

        // Σ_t p_t z_t of each head and group, added to each of the group's channels.
        for (int i = 0; i < heads; i++)
            for (int grp = 0; grp < groups; grp++)
            {
                var bias = Vector512.Create(Vector512.Sum(Vector512.LoadUnsafe(ref bias0, (nuint)((i * groups + grp) * lanes))));
                for (int c = grp * gv; c < (grp + 1) * gv; c += lanes)
                    (Vector512.LoadUnsafe(ref o, (nuint)(i * d + c)) + bias).StoreUnsafe(ref o, (nuint)(i * d + c));
            }
    }
}
