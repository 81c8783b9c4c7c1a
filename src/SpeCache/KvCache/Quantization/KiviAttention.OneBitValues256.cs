using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace SpeCache.KvCache.Quantization;

/// <summary>
/// The 256-bit 1-bit value sums of four or eight query heads in 16-bit fixed point, 16 channels a lookup.
/// </summary>
/// <remarks>
/// <para>The float kernel (<see cref="AddOneBitByPairTables256"/>) looks a pair of tokens up in a
/// 4-entry float table by <c>vpshufb</c>: a float is 4 bytes, so a 256-bit lookup covers 8 channels.
/// Here each span of 64 tokens (<see cref="FixedSpanTokens"/>) has, per head and value group, a unit
/// = Σ_t p_t s_t / ~65500, and each token's weight becomes an integer u_t = round(p_t s_t / unit),
/// so a channel's sum over the span, Σ_t u_t code_t,c, fits 16 bits. The pair tables then hold
/// 16-bit entries (two pairs of a run of 4 tokens in 16 bytes), one lookup covers 16 channels, and
/// the 16-bit sums stay in registers over the span's 16 runs before they are widened, converted and
/// scaled into the float output once. Half the lookups and half the byte controls per channel.</para>
/// <para>What the rounding costs: each weight moves by at most unit / 2, so a channel's sum over a
/// span by at most unit / 2 per set code, unit a 65500th of the span's total weight. The 1-bit codes
/// themselves move each value channel by up to half its token's range: on random values under peaked
/// softmax weights (1000 tokens, 8 heads) the fixed point's RMS is 0.013 % of the codes' RMS error.
/// A span whose weights are not all finite and non-negative takes the float tables.</para>
/// </remarks>
public static partial class KiviAttention
{
    /// <summary>Tokens that share one fixed-point unit per head and value group: four blocks of 16.</summary>
    public const int FixedSpanTokens = 4 * KiviFormat.BlockTokens;

    /// <summary>The most a 16-bit sum of u_t over a span may reach: 65535 less room for rounding each token up by a half.</summary>
    internal const float FixedSpanBudget = ushort.MaxValue - FixedSpanTokens / 2 - 2;

    /// <summary>
    /// One span's fixed-point unit per [head][group] row from its staged weights (<paramref name="blocks"/>
    /// blocks of <paramref name="rows"/> rows of 16, <paramref name="blockStaged"/> apart; a part-filled
    /// block's empty lanes zero); false when a weight is negative, NaN or infinite. The kernel and the
    /// tests' bound take the unit as this span's Σ p_t s_t over <see cref="FixedSpanBudget"/>.
    /// </summary>
    static bool FixedUnits(ref float staged, int blocks, int rows, int blockStaged, Span<float> units, Span<float> inverses)
    {
        for (int r = 0; r < rows; r++)
        {
            var sum = Vector256<float>.Zero;
            var negative = Vector256<float>.Zero;
            for (int b = 0; b < blocks; b++)
            {
                var lo = Vector256.LoadUnsafe(ref staged, (nuint)(b * blockStaged + r * KiviFormat.BlockTokens));
                var hi = Vector256.LoadUnsafe(ref staged, (nuint)(b * blockStaged + r * KiviFormat.BlockTokens + 8));
                sum += lo + hi;
                negative |= Vector256.LessThan(lo, Vector256<float>.Zero) | Vector256.LessThan(hi, Vector256<float>.Zero);
            }
            float mass = Vector256.Sum(sum);
            float inverse = mass == 0 ? 0 : FixedSpanBudget / mass;
            if (!float.IsFinite(mass) || !float.IsFinite(inverse) || negative != Vector256<float>.Zero) return false;
            units[r] = mass / FixedSpanBudget;
            inverses[r] = inverse;
        }
        return true;
    }

    /// <summary>
    /// 1 bit, <typeparamref name="THeads"/> (4 or 8) heads: Σ_t p_t s_t code_t,c of one span of up to
    /// 64 tokens (<paramref name="blocks"/> blocks at <paramref name="block0"/>) into each head's
    /// output, from the span's staged weights (<paramref name="scaled"/>, [block][head][group][token]).
    /// False, with nothing added, when the span's weights cannot be made fixed-point.
    /// <paramref name="tables"/> (heads × groups × 16 runs × 16 bytes) is scratch.
    /// </summary>
    static unsafe bool AddOneBitSpanFixed256<THeads>(KiviFormat format, ReadOnlySpan<float> scaled, int blocks, ref byte block0, byte* tables, ref float o)
        where THeads : struct, IHeadCount
    {
        const int blockTokens = KiviFormat.BlockTokens;
        int heads = THeads.Count, d = format.HeadDim, gv = format.ValueGroupSize, groups = format.ValueGroupsPerToken, runBytes = d / 2;
        int blockStaged = heads * groups * blockTokens, rows = heads * groups;
        Span<float> units = stackalloc float[rows];
        Span<float> inverses = stackalloc float[rows];
        ref float staged = ref MemoryMarshal.GetReference(scaled);
        if (!FixedUnits(ref staged, blocks, rows, blockStaged, units, inverses)) return false;

        // Per row and run of 4 tokens a 16-byte table of 16-bit entries: [0, u0, u1, u0 + u1, 0, u2, u3, u2 + u3].
        for (int r = 0; r < rows; r++)
        {
            var inverse = Vector256.Create(inverses[r]);
            for (int b = 0; b < blocks; b++)
                for (int t = 0; t < blockTokens; t += 8)
                {
                    // Rounded to nearest, ties to even (the default rounding mode), as MathF.Round.
                    var u = Avx.ConvertToVector256Int32(Vector256.LoadUnsafe(ref staged, (nuint)(b * blockStaged + r * blockTokens + t)) * inverse);
                    var pairs = u + Avx2.Shuffle(u, 0b10_11_00_01); // lanes 0 and 2 of each half: u0 + u1, u2 + u3
                    var first = Avx2.Blend(Avx2.Blend(Avx2.Shuffle(u, 0b00_01_00_00), Vector256<int>.Zero, 0b0001_0001), Avx2.Shuffle(pairs, 0b00_00_00_00), 0b1000_1000);
                    var second = Avx2.Blend(Avx2.Blend(Avx2.Shuffle(u, 0b00_11_10_00), Vector256<int>.Zero, 0b0001_0001), Avx2.Shuffle(pairs, 0b10_00_00_00), 0b1000_1000);
                    // Every entry is in 0..65535 (the budget), so the saturating pack keeps it; each half is one run's table.
                    Avx2.PackUnsignedSaturate(first, second).AsByte().Store(tables + (r * FixedSpanTokens + b * blockTokens + t) * 4);
                }
        }

        // Lane i's byte controls: the nibble byte of channel i in both bytes of word i.
        var spread = Vector256.Create((byte)0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 6, 6, 6, 6, 7, 7, 7, 7);
        var entry = Vector256.Create((byte)0x06);
        var firstBytes = Vector256.Create((ushort)0x0100).AsByte();  // an entry of the first pair: bytes 2e, 2e + 1
        var secondBytes = Vector256.Create((ushort)0x0908).AsByte(); // of the second pair: 8 + 2e, 9 + 2e
        int runs = blocks * 4, blockBytes = format.ValueBlockBytes, headTables = groups * FixedSpanTokens * 4;
        for (int grp = 0; grp < groups; grp++)
            for (int c = grp * gv; c < (grp + 1) * gv; c += 16)
            {
                Vector256<ushort> a0 = default, a1 = default, a2 = default, a3 = default, a4 = default, a5 = default, a6 = default, a7 = default;
                byte* table = tables + grp * FixedSpanTokens * 4;
                for (int run = 0; run < runs; run++, table += 16)
                {
                    // Run r of block b: its nibbles of channels c .. c+15 (8 bytes), word i taking channel i's nibble.
                    ref byte nibbles = ref Unsafe.Add(ref block0, (run >> 2) * blockBytes + (run & 3) * runBytes + (c >> 1));
                    var bytes = Avx2.Shuffle(Vector256.Create(Unsafe.ReadUnaligned<ulong>(ref nibbles)).AsByte(), spread);
                    var nibble = Avx2.Blend(bytes.AsUInt16(), bytes.AsUInt16() >>> 4, 0b1010_1010);
                    var first = ((nibble << 1).AsByte() & entry) | firstBytes;
                    var second = ((nibble >>> 1).AsByte() & entry) | secondBytes;
                    a0 += LookUpFixed(table, first, second);
                    a1 += LookUpFixed(table + headTables, first, second);
                    a2 += LookUpFixed(table + 2 * headTables, first, second);
                    a3 += LookUpFixed(table + 3 * headTables, first, second);
                    if (heads == 8)
                    {
                        a4 += LookUpFixed(table + 4 * headTables, first, second);
                        a5 += LookUpFixed(table + 5 * headTables, first, second);
                        a6 += LookUpFixed(table + 6 * headTables, first, second);
                        a7 += LookUpFixed(table + 7 * headTables, first, second);
                    }
                }
                AddFixed(ref o, c, a0, units[grp]);
                AddFixed(ref Unsafe.Add(ref o, d), c, a1, units[groups + grp]);
                AddFixed(ref Unsafe.Add(ref o, 2 * d), c, a2, units[2 * groups + grp]);
                AddFixed(ref Unsafe.Add(ref o, 3 * d), c, a3, units[3 * groups + grp]);
                if (heads == 8)
                {
                    AddFixed(ref Unsafe.Add(ref o, 4 * d), c, a4, units[4 * groups + grp]);
                    AddFixed(ref Unsafe.Add(ref o, 5 * d), c, a5, units[5 * groups + grp]);
                    AddFixed(ref Unsafe.Add(ref o, 6 * d), c, a6, units[6 * groups + grp]);
                    AddFixed(ref Unsafe.Add(ref o, 7 * d), c, a7, units[7 * groups + grp]);
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
    [SkipLocalsInit] // every table byte is written before it is read
    static unsafe void AccumulateOneBitSpans256<THeads>(KiviFormat format, ref float p0, int count, int stride, ReadOnlySpan<byte> values, Span<float> scaled,
        ref float bias, Span<float> partial, float* tables, ref float o)
        where THeads : struct, IHeadCount
    {
        const int blockTokens = KiviFormat.BlockTokens;
        int heads = THeads.Count, d = format.HeadDim, gv = format.ValueGroupSize, groups = format.ValueGroupsPerToken;
        int blockStaged = heads * groups * blockTokens;
        byte* fixedTables = stackalloc byte[heads * groups * FixedSpanTokens * 4];
        ref float span0 = ref MemoryMarshal.GetReference(scaled);
        for (int start = 0; start < count; start += FixedSpanTokens)
        {
            int blocks = Math.Min(4, (count - start + blockTokens - 1) / blockTokens);
            for (int b = 0; b < blocks; b++)
                StageBlock256<THeads>(format, ref p0, count, stride, values, start + b * blockTokens, ref Unsafe.Add(ref span0, b * blockStaged), ref bias, partial);
            ref byte first = ref Unsafe.Add(ref MemoryMarshal.GetReference(values), (nint)(start / blockTokens) * format.ValueBlockBytes);
            if (AddOneBitSpanFixed256<THeads>(format, scaled, blocks, ref first, fixedTables, ref o)) continue;
            for (int b = 0; b < blocks; b++)
                for (int grp = 0; grp < groups; grp++)
                    AddOneBitByPairTables256<THeads>(ref Unsafe.Add(ref span0, b * blockStaged + grp * blockTokens), groups * blockTokens,
                        ref Unsafe.Add(ref first, b * format.ValueBlockBytes), d, grp * gv, (grp + 1) * gv, tables, ref o);
        }
    }

    /// <summary>A run's two pair tables (16 bytes at <paramref name="table"/>, in both halves) looked up for 16 channels: the first pair's entry plus the second's.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static unsafe Vector256<ushort> LookUpFixed(byte* table, Vector256<byte> first, Vector256<byte> second)
    {
        var t = Avx2.BroadcastVector128ToVector256(table);
        return Avx2.Shuffle(t, first).AsUInt16() + Avx2.Shuffle(t, second).AsUInt16();
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
