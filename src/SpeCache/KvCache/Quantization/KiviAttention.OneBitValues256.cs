using System.Buffers.Binary;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace SpeCache.KvCache.Quantization;

/// <summary>
/// The 256-bit 1-bit value sums of four or eight query heads by byte tables of 4 tokens, 16 channels a lookup.
/// </summary>
/// <remarks>
/// <para>The float kernel (<see cref="AddOneBitByPairTables256"/>) looks a pair of tokens up in a
/// 4-entry float table by <c>vpshufb</c>: a float is 4 bytes, so a 256-bit lookup covers 8 channels.
/// Here each span of 64 tokens (<see cref="FixedSpanTokens"/>) has, per head and value group, a unit
/// = max_t p_t s_t / 63, and each token's weight becomes a 6-bit integer u_t = round(p_t s_t / unit).
/// A run's 4 tokens then have a 16-entry byte table of the sums of their u (at most 4 × 63 = 252), and
/// a channel's nibble (the run's 4 codes of it) picks its entry: one <c>vpshufb</c> of the run's table
/// by a control with the nibble in each 16-bit word's low byte looks up 16 channels, already widened
/// to words (the high byte picks entry 0, which is 0). A span's sums, at most 16 × 252, stay in 16-bit
/// registers until they are widened, converted and scaled into the float output once. The controls
/// are made once per span for all heads; each head builds its tables in registers from 8 tokens'
/// weights at a time. The 16-bit tables this replaced (two lookups of a pair table per run, a
/// 65500th of the span's weight a unit) cost twice the lookups and a table store and reload per run.</para>
/// <para>What the rounding costs: each weight moves by at most unit / 2, so a channel's sum over a
/// span by at most unit / 2 per set code (<see cref="AccumulateValuesSixBitScalar"/> is this
/// arithmetic one channel at a time; the tests hold the kernel to it, and it to that bound of the
/// exact sum). The 1-bit codes themselves move each value channel by up to half its token's range:
/// on random values under peaked softmax weights (1000 tokens, 8 heads) the 6-bit weights' RMS is a
/// few percent of the codes' RMS error, as the key kernel's 6-bit weights are of the keys'.
/// A span whose weights are not all finite and non-negative takes the float tables.</para>
/// </remarks>
public static partial class KiviAttention
{
    /// <summary>Tokens that share one fixed-point unit per head and value group: four blocks of 16.</summary>
    public const int FixedSpanTokens = 4 * KiviFormat.BlockTokens;

    /// <summary>Levels of the 256-bit 1-bit value kernel's rounded token weights, 0 to 63: four of them sum to a byte.</summary>
    public const int ValueWeightLevels = 63;

    /// <summary>
    /// The scalar reference <paramref name="kernel"/> computes, one token and channel at a time:
    /// <see cref="AccumulateValuesSixBitScalar"/> for the 256-bit kernel at 1 bit (with value groups of
    /// whole 16-channel chunks), the exact float sum (<see cref="AccumulateValuesScalar(KiviFormat, ReadOnlySpan{float}, int, int, ReadOnlySpan{byte}, Span{float})"/>) for every other.
    /// </summary>
    public static void AccumulateValuesReference(KiviKernel kernel, KiviFormat format, ReadOnlySpan<float> probabilities, int count, int stride, ReadOnlySpan<byte> values, Span<float> output)
    {
        if (kernel == KiviKernel.Vector256 && format.Bits == 1 && format.ValueGroupSize % 16 == 0) AccumulateValuesSixBitScalar(format, probabilities, count, stride, values, output);
        else AccumulateValuesScalar(format, probabilities, count, stride, values, output);
    }

    /// <summary>
    /// Scalar reference of the 256-bit 1-bit value kernel: the heads in batches of eight, then four, as
    /// the kernel takes them, and per batch, span of <see cref="FixedSpanTokens"/> tokens, head and value
    /// group each token's p_t s_t rounded to a multiple of the unit (the largest p_t s_t over
    /// <see cref="ValueWeightLevels"/>), the codes' part summed as integers. Heads past the batches, and
    /// a batch's span with a weight that is not finite and non-negative, are summed exactly, as the
    /// kernel then sums them in floats.
    /// </summary>
    public static void AccumulateValuesSixBitScalar(KiviFormat format, ReadOnlySpan<float> probabilities, int count, int stride, ReadOnlySpan<byte> values, Span<float> output)
    {
        if (format.Bits != 1 || format.ValueGroupSize % 16 != 0)
            throw new ArgumentException($"6-bit weights are the 1-bit value kernel's on groups of whole 16-channel chunks, not {format.Bits}-bit codes in groups of {format.ValueGroupSize}", nameof(format));
        int heads = CheckAccumulateValues(format, probabilities, count, stride, values, output);
        int d = format.HeadDim, gv = format.ValueGroupSize, groups = format.ValueGroupsPerToken;
        var weights = new float[FixedSpanTokens];
        var levels = new int[8 * groups * FixedSpanTokens];
        var units = new float[8 * groups];
        for (int h0 = 0; h0 < heads;)
        {
            int batch = heads - h0 >= 8 ? 8 : heads - h0 >= 4 ? 4 : 1;
            for (int start = 0; start < count; start += FixedSpanTokens)
            {
                int n = Math.Min(FixedSpanTokens, count - start);
                bool rounded = batch > 1;
                for (int r = 0; r < batch * groups && rounded; r++)
                {
                    int h = h0 + r / groups, grp = r % groups;
                    float largest = 0;
                    for (int t = 0; t < n; t++)
                    {
                        weights[t] = probabilities[h * stride + start + t] * HalfAt(values, format.ValueScaleOffset(start + t, grp));
                        rounded &= weights[t] >= 0;
                        largest = MathF.Max(largest, weights[t]);
                    }
                    float inverse = largest == 0 ? 0 : ValueWeightLevels / largest;
                    rounded &= float.IsFinite(largest) && float.IsFinite(inverse);
                    units[r] = largest / ValueWeightLevels;
                    for (int t = 0; t < n; t++) levels[r * FixedSpanTokens + t] = (int)MathF.Round(weights[t] * inverse);
                }
                for (int i = 0; i < batch; i++)
                {
                    int h = h0 + i;
                    for (int c = 0; c < d; c++)
                    {
                        int grp = c / gv, r = i * groups + grp, sum = 0;
                        for (int t = start; t < start + n; t++)
                        {
                            float p = probabilities[h * stride + t];
                            int code = KiviCodes.ReadValue(values, format, t, c);
                            if (rounded)
                            {
                                sum += levels[r * FixedSpanTokens + t - start] * code;
                                output[h * d + c] += p * HalfAt(values, format.ValueScaleOffset(t, grp) + format.ValueZeroDistance);
                            }
                            else output[h * d + c] += MathF.FusedMultiplyAdd(p * HalfAt(values, format.ValueScaleOffset(t, grp)), code, p * HalfAt(values, format.ValueScaleOffset(t, grp) + format.ValueZeroDistance));
                        }
                        if (rounded) output[h * d + c] = MathF.FusedMultiplyAdd(sum, units[r], output[h * d + c]);
                    }
                }
            }
            h0 += batch;
        }
    }

    static float HalfAt(ReadOnlySpan<byte> bytes, long at) => (float)BinaryPrimitives.ReadHalfLittleEndian(bytes[(int)at..]);

    /// <summary>
    /// One span's unit and its inverse per [head][group] row from its staged weights (<paramref name="blocks"/>
    /// blocks of <paramref name="rows"/> rows of 16, <paramref name="blockStaged"/> apart; a part-filled
    /// block's empty lanes zero): the row's largest p_t s_t over <see cref="ValueWeightLevels"/>, so no
    /// rounded weight passes 63. False when a weight is negative, NaN or infinite, or the inverse overflows.
    /// </summary>
    static bool SpanUnits(ref float staged, int blocks, int rows, int blockStaged, Span<float> units, Span<float> inverses)
    {
        for (int r = 0; r < rows; r++)
        {
            var most = Vector256<float>.Zero;
            var unusable = Vector256<float>.Zero;
            for (int b = 0; b < blocks; b++)
            {
                var lo = Vector256.LoadUnsafe(ref staged, (nuint)(b * blockStaged + r * KiviFormat.BlockTokens));
                var hi = Vector256.LoadUnsafe(ref staged, (nuint)(b * blockStaged + r * KiviFormat.BlockTokens + 8));
                most = Avx.Max(most, Avx.Max(lo, hi));
                // Not (x >= 0): negative or NaN.
                unusable |= Avx.CompareNotGreaterThanOrEqual(lo, Vector256<float>.Zero) | Avx.CompareNotGreaterThanOrEqual(hi, Vector256<float>.Zero);
            }
            float largest = HorizontalMax(most);
            float inverse = largest == 0 ? 0 : ValueWeightLevels / largest;
            if (unusable != Vector256<float>.Zero || !float.IsFinite(largest) || !float.IsFinite(inverse)) return false;
            units[r] = largest / ValueWeightLevels;
            inverses[r] = inverse;
        }
        return true;
    }

    /// <summary>
    /// 1 bit, <typeparamref name="THeads"/> (4 or 8) heads: Σ_t p_t s_t code_t,c of one span of up to
    /// 64 tokens (<paramref name="blocks"/> blocks at <paramref name="block0"/>) into each head's
    /// output, from the span's staged weights (<paramref name="scaled"/>, [block][head][group][token]).
    /// False, with nothing added, when the span's weights cannot be made fixed-point.
    /// <paramref name="controls"/> (16 runs × HeadDim / 16 registers, 32-byte aligned) is scratch.
    /// </summary>
    static unsafe bool AddOneBitSpanBytes256<THeads>(KiviFormat format, ReadOnlySpan<float> scaled, int blocks, ref byte block0, Vector256<byte>* controls, in TableIndices indices, ref float o)
        where THeads : struct, IHeadCount
    {
        const int blockTokens = KiviFormat.BlockTokens;
        int heads = THeads.Count, d = format.HeadDim, gv = format.ValueGroupSize, groups = format.ValueGroupsPerToken;
        int blockStaged = heads * groups * blockTokens, rows = heads * groups, chunks = d / 16, runBytes = d / 2, blockBytes = format.ValueBlockBytes;
        Span<float> units = stackalloc float[rows];
        Span<float> inverses = stackalloc float[rows];
        ref float staged = ref MemoryMarshal.GetReference(scaled);
        if (!SpanUnits(ref staged, blocks, rows, blockStaged, units, inverses)) return false;

        // Per run and 16 channels a control: word i's low byte channel i's nibble, its high byte 0.
        var spread = Vector256.Create((byte)0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 6, 6, 6, 6, 7, 7, 7, 7);
        var nibble = Vector256.Create((ushort)0x000F);
        Vector256<byte>* control = controls;
        for (int run = 0; run < blocks * 4; run++)
        {
            ref byte nibbles = ref Unsafe.Add(ref block0, (run >> 2) * blockBytes + (run & 3) * runBytes);
            for (int k = 0; k < chunks; k++, control++)
            {
                // Both bytes of word i hold the byte of channels 2⌊i/2⌋, +1: the odd words take its high nibble.
                var bytes = Avx2.Shuffle(Vector256.Create(Unsafe.ReadUnaligned<ulong>(ref Unsafe.Add(ref nibbles, 8 * k))).AsByte(), spread).AsUInt16();
                *control = (Avx2.Blend(bytes, bytes >>> 4, 0b1010_1010) & nibble).AsByte();
            }
        }

        for (int i = 0; i < heads; i++)
            for (int grp = 0; grp < groups; grp++)
            {
                int r = i * groups + grp;
                var inverse = Vector256.Create(inverses[r]);
                ref float w = ref Unsafe.Add(ref staged, r * blockTokens);
                for (int c = grp * gv; c < (grp + 1) * gv; c += 64)
                {
                    // Up to four 16-channel chunks' sums in registers at once.
                    int n = Math.Min(64, (grp + 1) * gv - c) / 16;
                    Vector256<ushort> a0 = default, a1 = default, a2 = default, a3 = default;
                    control = controls + c / 16;
                    for (int b = 0; b < blocks; b++)
                        for (int t = 0; t < blockTokens; t += 8, control += 2 * chunks)
                        {
                            // Rounded to nearest, ties to even (the default rounding mode), as MathF.Round; every level is in 0..63.
                            var levels = Avx.ConvertToVector256Int32(Vector256.LoadUnsafe(ref w, (nuint)(b * blockStaged + t)) * inverse).AsByte();
                            var tables = (Avx2.Shuffle(levels, indices.Bit0) + Avx2.Shuffle(levels, indices.Bit1)) + (Avx2.Shuffle(levels, indices.Bit2) + Avx2.Shuffle(levels, indices.Bit3));
                            var first = Avx2.Permute2x128(tables, tables, 0x00);
                            var second = Avx2.Permute2x128(tables, tables, 0x11);
                            Vector256<byte>* next = control + chunks; // the second run's controls
                            a0 += Avx2.Shuffle(first, control[0]).AsUInt16() + Avx2.Shuffle(second, next[0]).AsUInt16();
                            if (n > 1) a1 += Avx2.Shuffle(first, control[1]).AsUInt16() + Avx2.Shuffle(second, next[1]).AsUInt16();
                            if (n > 2) a2 += Avx2.Shuffle(first, control[2]).AsUInt16() + Avx2.Shuffle(second, next[2]).AsUInt16();
                            if (n > 3) a3 += Avx2.Shuffle(first, control[3]).AsUInt16() + Avx2.Shuffle(second, next[3]).AsUInt16();
                        }
                    ref float oi = ref Unsafe.Add(ref o, i * d);
                    AddFixed(ref oi, c, a0, units[r]);
                    if (n > 1) AddFixed(ref oi, c + 16, a1, units[r]);
                    if (n > 2) AddFixed(ref oi, c + 32, a2, units[r]);
                    if (n > 3) AddFixed(ref oi, c + 48, a3, units[r]);
                }
            }
        return true;
    }

    /// <summary>
    /// 1 bit, four or eight heads: per span of four blocks their p_t s_t staged (and p_t z_t added to
    /// the running <paramref name="bias"/>), then the codes' part in fixed point, or by the float pair
    /// tables when the span's weights cannot be made fixed-point. <paramref name="scaled"/> holds four
    /// blocks' staging; <paramref name="tables"/> the float kernel's.
    /// </summary>
    [SkipLocalsInit] // every control is written before it is read
    static unsafe void AccumulateOneBitSpans256<THeads>(KiviFormat format, ref float p0, int count, int stride, ReadOnlySpan<byte> values, Span<float> scaled,
        ref float bias, Span<float> partial, float* tables, ref float o)
        where THeads : struct, IHeadCount
    {
        const int blockTokens = KiviFormat.BlockTokens;
        int heads = THeads.Count, d = format.HeadDim, gv = format.ValueGroupSize, groups = format.ValueGroupsPerToken;
        int blockStaged = heads * groups * blockTokens;
        byte* controlSpace = stackalloc byte[FixedSpanTokens / 4 * (d / 16) * 32 + 32];
        var controls = Aligned32<Vector256<byte>>(controlSpace);
        var indices = TableIndices.OfTokenLevels();
        ref float span0 = ref MemoryMarshal.GetReference(scaled);
        for (int start = 0; start < count; start += FixedSpanTokens)
        {
            int blocks = Math.Min(4, (count - start + blockTokens - 1) / blockTokens);
            for (int b = 0; b < blocks; b++)
                StageBlock256<THeads>(format, ref p0, count, stride, values, start + b * blockTokens, ref Unsafe.Add(ref span0, b * blockStaged), ref bias, partial);
            ref byte first = ref Unsafe.Add(ref MemoryMarshal.GetReference(values), (nint)(start / blockTokens) * format.ValueBlockBytes);
            if (AddOneBitSpanBytes256<THeads>(format, scaled, blocks, ref first, controls, indices, ref o)) continue;
            for (int b = 0; b < blocks; b++)
                for (int grp = 0; grp < groups; grp++)
                    AddOneBitByPairTables256<THeads>(ref Unsafe.Add(ref span0, b * blockStaged + grp * blockTokens), groups * blockTokens,
                        ref Unsafe.Add(ref first, b * format.ValueBlockBytes), d, grp * gv, (grp + 1) * gv, tables, ref o);
        }
    }

    /// <summary>16 channels' 16-bit sums widened, converted and scaled by the unit into the float output at channel <paramref name="c"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void AddFixed(ref float o, int c, Vector256<ushort> sums, float unit)
    {
        var step = Vector256.Create(unit);
        var low = Vector256.ConvertToSingle(Avx2.ConvertToVector256Int32(sums.GetLower()));
        var high = Vector256.ConvertToSingle(Avx2.ConvertToVector256Int32(sums.GetUpper()));
        Vector256.FusedMultiplyAdd(low, step, Vector256.LoadUnsafe(ref o, (nuint)c)).StoreUnsafe(ref o, (nuint)c);
        Vector256.FusedMultiplyAdd(high, step, Vector256.LoadUnsafe(ref o, (nuint)(c + 8))).StoreUnsafe(ref o, (nuint)(c + 8));
    }
}
