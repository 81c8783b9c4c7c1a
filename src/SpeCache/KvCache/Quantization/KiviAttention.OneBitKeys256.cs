using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace SpeCache.KvCache.Quantization;

/// <summary>
/// The 256-bit 1-bit key scores by integer sums. Per group and query head the weights w = q∘s are
/// rounded to bytes, w_c ≈ low + step × u_c (low the least weight, step the range over 255), so a
/// token's Σ_c w_c code_t,c is low × (its set codes) + step × Σ u_c over its set channels, and that
/// sum is integer work: each code byte (8 channels of a token) spread to a byte mask, the mask
/// kept of u's 8 bytes and the 8 bytes summed by <c>vpsadbw</c>, 32 channel-tokens per instruction.
/// </summary>
/// <remarks>
/// <para>Why bytes: on AVX2 a float table lookup covers 3 channels (<c>vpermps</c>, 8 entries) or 2
/// (<c>vpshufb</c> on 16-byte tables) and needs a float add of 8 lanes per lookup; on the first Zen
/// cores (128-bit units, <c>vpermps</c> about 4 cycles) a pass of the 3-channel table kernel over
/// 32K tokens took 651-656 us, a 2-channel <c>vpshufb</c> form 589, and this one 486 with its
/// per-group set-up (<c>bench/KiviBench 32768 0.5 64</c>: 4 query heads, heads of 64, groups of 64). The
/// 512-bit kernel keeps its 16-entry float tables (<c>vpermps</c> on 16 lanes is one instruction
/// per 4 channels there) and the 128-bit kernel its conversions.</para>
/// <para>What rounding costs: each weight moves by at most step / 2, so a score by at most step / 2
/// times the token's set codes (<see cref="KeyScoresByteWeightsScalar"/> is this arithmetic one
/// channel at a time; the tests hold the kernel to it and it to that bound of the exact sum). The
/// 1-bit codes themselves move each key channel by up to half its group's range: on random keys
/// the byte rounding's RMS is 0.9 % of the 1-bit codes' RMS score error, 2.3 % with four channels 20
/// times the others (the outliers KIVI reports), so the two together are within 0.03 % of the codes'
/// error alone.</para>
/// </remarks>
public static partial class KiviAttention
{
    /// <summary>
    /// The scalar reference <paramref name="kernel"/> computes, one token and channel at a time:
    /// <see cref="KeyScoresByteWeightsScalar"/> for the 256-bit kernel at 1 bit, the exact float sum
    /// (<see cref="KeyScoresScalar(KiviFormat, ReadOnlySpan{float}, ReadOnlySpan{byte}, Span{float}, int)"/>) for every other.
    /// </summary>
    public static void KeyScoresReference(KiviKernel kernel, KiviFormat format, ReadOnlySpan<float> queries, ReadOnlySpan<byte> group, Span<float> scores, int stride)
    {
        if (kernel == KiviKernel.Vector256 && format.Bits == 1) KeyScoresByteWeightsScalar(format, queries, group, scores, stride);
        else KeyScoresScalar(format, queries, group, scores, stride);
    }

    /// <summary>
    /// Scalar reference of the 256-bit 1-bit key kernel: <see cref="KeyScoresScalar(KiviFormat, ReadOnlySpan{float}, ReadOnlySpan{byte}, Span{float}, int)"/>
    /// with each head's q∘s rounded to bytes by <see cref="ByteWeights"/> (over the padded channels, as
    /// the kernel reads them) and the codes' part summed as integers.
    /// </summary>
    public static void KeyScoresByteWeightsScalar(KiviFormat format, ReadOnlySpan<float> queries, ReadOnlySpan<byte> group, Span<float> scores, int stride)
    {
        if (format.Bits != 1) throw new ArgumentException($"byte weights are the 1-bit key kernel's, not {format.Bits}-bit codes'", nameof(format));
        int heads = CheckKeyScores(format, queries, group, scores, stride);
        int d = format.HeadDim, g = format.GroupSize, channels = format.KeyWordsPerToken * 32;
        var scales = MemoryMarshal.Cast<byte, Half>(group[..(2 * d)]);
        var zeros = MemoryMarshal.Cast<byte, Half>(group.Slice(2 * d, 2 * d));
        var codes = group.Slice(format.KeyCodesOffset, format.KeyCodeBytes);
        var weights = new float[channels];
        var bytes = new byte[channels];
        for (int h = 0; h < heads; h++)
        {
            var q = queries.Slice(h * d, d);
            float bias = 0;
            for (int c = 0; c < d; c++)
            {
                bias += q[c] * (float)zeros[c];
                weights[c] = q[c] * (float)scales[c];
            }
            var (low, step) = ByteWeights(weights, bytes);
            for (int t = 0; t < g; t++)
            {
                int set = 0, sum = 0;
                for (int c = 0; c < d; c++)
                {
                    int code = KiviCodes.ReadKey(codes, format, t, c);
                    set += code;
                    sum += code * bytes[c];
                }
                scores[h * stride + t] = MathF.FusedMultiplyAdd(step, sum, MathF.FusedMultiplyAdd(low, set, bias));
            }
        }
    }

    /// <summary>
    /// <paramref name="weights"/> rounded to bytes: w_c ≈ low + step × u_c, low the least weight,
    /// step (highest − low) / 255, u_c = (w_c − low) × 255 / (highest − low) rounded to the nearest
    /// (ties to even). Equal weights give step 0 and every byte 0; a NaN among them, a NaN low.
    /// </summary>
    public static (float Low, float Step) ByteWeights(ReadOnlySpan<float> weights, Span<byte> bytes)
    {
        if (weights.IsEmpty) throw new ArgumentException("no weights to round", nameof(weights));
        if (bytes.Length < weights.Length) throw new ArgumentException($"{weights.Length} weights need as many bytes, got {bytes.Length}", nameof(bytes));
        float low = weights[0], high = weights[0];
        foreach (float w in weights)
        {
            low = MathF.Min(low, w);
            high = MathF.Max(high, w);
        }
        if (!(high > low))
        {
            bytes[..weights.Length].Clear();
            return (low, 0);
        }
        float inverse = 255f / (high - low);
        for (int c = 0; c < weights.Length; c++) bytes[c] = (byte)(int)MathF.Round((weights[c] - low) * inverse);
        return (low, (high - low) / 255f);
    }

    /// <summary>
    /// One head's weights q∘s staged in <paramref name="w"/> (zero past the head, up to the padded
    /// <paramref name="channels"/>, a multiple of 32) and rounded to bytes as <see cref="ByteWeights"/>
    /// does, the same bytes; and its bias Σ q_c z_c.
    /// </summary>
    static unsafe void ByteWeights256(ref float q, ref float scale, ref float zero, int d, int channels, float* w, byte* bytes,
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
                x = qc * Vector256.LoadUnsafe(ref scale, (nuint)c);
                sum = Fma.MultiplyAdd(qc, Vector256.LoadUnsafe(ref zero, (nuint)c), sum);
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
            new Span<byte>(bytes, channels).Clear();
            step = 0;
            return;
        }
        var inverse = Vector256.Create(255f / (high - low));
        for (int c = 0; c < channels; c += 32)
        {
            // Rounded to nearest, ties to even (the default rounding mode), as MathF.Round; every value is in 0..255.
            var a = Avx.ConvertToVector256Int32((Vector256.Load(w + c) - least) * inverse);
            var b = Avx.ConvertToVector256Int32((Vector256.Load(w + c + 8) - least) * inverse);
            var e = Avx.ConvertToVector256Int32((Vector256.Load(w + c + 16) - least) * inverse);
            var f = Avx.ConvertToVector256Int32((Vector256.Load(w + c + 24) - least) * inverse);
            // The packs work in 128-bit halves, leaving 4-byte runs in the order a0 b0 e0 f0 a1 b1 e1 f1; the permute puts them back.
            var packed = Avx2.PackUnsignedSaturate(Avx2.PackSignedSaturate(a, b), Avx2.PackSignedSaturate(e, f));
            Avx2.PermuteVar8x32(packed.AsInt32(), Vector256.Create(0, 4, 1, 5, 2, 6, 3, 7)).AsByte().Store(bytes + c);
        }
        step = (high - low) / 255f;
    }

    /// <summary>Each token's count of codes that are 1 in a 1-bit key group (all its words), by nibble lookups: 8 tokens' word at a time.</summary>
    static unsafe void SetCodeCounts(KiviFormat format, ReadOnlySpan<byte> group, int* counts)
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
            Avx2.MultiplyAddAdjacent(pairs, Vector256.Create((short)1)).Store(counts + t);
        }
    }

    /// <summary>
    /// 1 bit, one or four query heads (<paramref name="queries"/>, n × HeadDim): each head's weights
    /// to bytes, then per 8 tokens and code byte two byte masks (tokens 0, 2, 4, 6 and 1, 3, 5, 7, an
    /// 8-byte mask per token) shared by the heads, and per head two masked <c>vpsadbw</c> sums into
    /// 64-bit lanes; each head's G scores written at <paramref name="stride"/> apart.
    /// </summary>
    [SkipLocalsInit] // every staged weight and byte is written before it is read
    static unsafe void ScoresByByteSums256<THeads>(KiviFormat format, ReadOnlySpan<float> queries, ReadOnlySpan<float> scale, ReadOnlySpan<float> zero,
        ReadOnlySpan<byte> group, int* setCounts, ref float score0, int stride)
        where THeads : struct, IHeadCount
    {
        int n = THeads.Count, d = format.HeadDim, g = format.GroupSize, words = format.KeyWordsPerToken, channels = words * 32;
        byte* bytes = stackalloc byte[n * channels];
        float* staged = stackalloc float[channels];
        float* lows = stackalloc float[n];
        float* steps = stackalloc float[n];
        float* biases = stackalloc float[n];
        for (int i = 0; i < n; i++)
            ByteWeights256(ref Unsafe.AsRef(in queries[i * d]), ref MemoryMarshal.GetReference(scale), ref MemoryMarshal.GetReference(zero), d, channels,
                staged, bytes + i * channels, out lows[i], out steps[i], out biases[i]);
        ref int codes = ref Unsafe.As<byte, int>(ref Unsafe.Add(ref MemoryMarshal.GetReference(group), format.KeyCodesOffset));
        var bit = Vector256.Create(0x8040201008040201ul).AsByte(); // byte i of each 8 keeps bit i: channel i of the code byte
        // vpshufb picks within 16-byte halves: each half's token dwords 0 and 2 (even) or 1 and 3 (odd), byte 0, in all 8 bytes of a 64-bit lane.
        var evenPick = Vector256.Create(0ul, 0x0808080808080808ul, 0ul, 0x0808080808080808ul).AsByte();
        var oddPick = evenPick + Vector256.Create((byte)4);
        for (int t = 0; t < g; t += 8)
        {
            Vector256<ulong> e0 = default, o0 = default, e1 = default, o1 = default, e2 = default, o2 = default, e3 = default, o3 = default;
            for (int w = 0; w < words; w++)
            {
                var x = Vector256.LoadUnsafe(ref codes, (nuint)format.KeyWordIndex(t, w)).AsByte();
                byte* bw = bytes + 32 * w;
                for (int k = 0; k < 4; k++, bw += 8)
                {
                    var kth = Vector256.Create((byte)k);
                    var even = Vector256.Equals(Avx2.Shuffle(x, evenPick + kth) & bit, bit);
                    var odd = Vector256.Equals(Avx2.Shuffle(x, oddPick + kth) & bit, bit);
                    e0 += SumMasked(even, bw);
                    o0 += SumMasked(odd, bw);
                    if (n == 4)
                    {
                        e1 += SumMasked(even, bw + channels);
                        o1 += SumMasked(odd, bw + channels);
                        e2 += SumMasked(even, bw + 2 * channels);
                        o2 += SumMasked(odd, bw + 2 * channels);
                        e3 += SumMasked(even, bw + 3 * channels);
                        o3 += SumMasked(odd, bw + 3 * channels);
                    }
                }
            }
            var set = Vector256.ConvertToSingle(Vector256.Load(setCounts + t));
            StoreScores(ref Unsafe.Add(ref score0, t), e0, o0, lows[0], steps[0], biases[0], set);
            if (n == 4)
            {
                StoreScores(ref Unsafe.Add(ref score0, stride + t), e1, o1, lows[1], steps[1], biases[1], set);
                StoreScores(ref Unsafe.Add(ref score0, 2 * stride + t), e2, o2, lows[2], steps[2], biases[2], set);
                StoreScores(ref Unsafe.Add(ref score0, 3 * stride + t), e3, o3, lows[3], steps[3], biases[3], set);
            }
        }
    }

    /// <summary>Σ of the 8 weight bytes at <paramref name="weights"/> where <paramref name="mask"/> is set, per 64-bit lane (one token each).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static unsafe Vector256<ulong> SumMasked(Vector256<byte> mask, byte* weights) =>
        Avx2.SumAbsoluteDifferences(mask & Vector256.Create(*(ulong*)weights).AsByte(), Vector256<byte>.Zero).AsUInt64();

    /// <summary>8 tokens' scores: bias + low × their set codes + step × their byte sums (even tokens' in <paramref name="even"/>, odd ones' in <paramref name="odd"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void StoreScores(ref float scores, Vector256<ulong> even, Vector256<ulong> odd, float low, float step, float bias, Vector256<float> set)
    {
        // Each sum fits 32 bits, so the odd tokens' go into the upper halves: tokens 0..7 in order.
        var sums = Vector256.ConvertToSingle((even | (odd << 32)).AsInt32());
        var start = Fma.MultiplyAdd(Vector256.Create(low), set, Vector256.Create(bias));
        Fma.MultiplyAdd(Vector256.Create(step), sums, start).StoreUnsafe(ref scores);
    }
}
