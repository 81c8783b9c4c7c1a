using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace SpeCache.KvCache.Quantization;

public static partial class KiviAttention
{
    /// <summary>Tokens whose scaled probabilities are staged on the stack at a time.</summary>
    const int ValueBlock = 64;

    /// <summary>
    /// Adds Σ_t p_t v_t into <paramref name="output"/> (HeadDim floats), v_t the dequantized value of
    /// the t-th of <c>probabilities.Length</c> packed value tokens laid end to end in <paramref name="tokens"/>.
    /// </summary>
    /// <remarks>
    /// With v_t,c = z_t,g + s_t,g code_t,c (g the channel's group): o_c += (p_t s_t,g) code_t,c + p_t z_t,g.
    /// The products p_t s_t,g are formed once per token and group; the p_t z_t,g terms only depend on
    /// the group, so they are summed over all tokens first and added to each channel once at the end.
    /// </remarks>
    public static void AccumulateValues(KiviFormat format, ReadOnlySpan<float> probabilities, ReadOnlySpan<byte> tokens, Span<float> output)
    {
        CheckAccumulateValues(format, probabilities, tokens, output);
        if (!KiviCodes.VectorPath)
        {
            AccumulateValuesScalar(format, probabilities, tokens, output);
            return;
        }
        switch (format.Bits)
        {
            case 1: AccumulateValuesVector<OneBit>(format, probabilities, tokens, output); break;
            case 2: AccumulateValuesVector<TwoBits>(format, probabilities, tokens, output); break;
            default: AccumulateValuesVector<FourBits>(format, probabilities, tokens, output); break;
        }
    }

    /// <summary>Scalar reference of <see cref="AccumulateValues"/>.</summary>
    public static void AccumulateValuesScalar(KiviFormat format, ReadOnlySpan<float> probabilities, ReadOnlySpan<byte> tokens, Span<float> output)
    {
        CheckAccumulateValues(format, probabilities, tokens, output);
        int d = format.HeadDim, gv = format.ValueGroupSize, groups = format.ValueGroupsPerToken, stride = format.ValueTokenBytes;
        for (int t = 0; t < probabilities.Length; t++)
        {
            float p = probabilities[t];
            var token = tokens.Slice(t * stride, stride);
            var codes = token[..format.ValueCodeBytes];
            var scales = MemoryMarshal.Cast<byte, Half>(token.Slice(format.ValueCodeBytes, 2 * groups));
            var zeros = MemoryMarshal.Cast<byte, Half>(token.Slice(format.ValueCodeBytes + 2 * groups, 2 * groups));
            for (int c = 0; c < d; c++)
            {
                float ps = p * (float)scales[c / gv], pz = p * (float)zeros[c / gv];
                output[c] += MathF.FusedMultiplyAdd(ps, KiviCodes.Read(codes, c, format.Bits), pz);
            }
        }
    }

    static void CheckAccumulateValues(KiviFormat format, ReadOnlySpan<float> probabilities, ReadOnlySpan<byte> tokens, Span<float> output)
    {
        if (tokens.Length < (long)probabilities.Length * format.ValueTokenBytes)
            throw new ArgumentException($"{probabilities.Length} value tokens are {probabilities.Length * format.ValueTokenBytes} bytes, got {tokens.Length}", nameof(tokens));
        if (output.Length != format.HeadDim)
            throw new ArgumentException($"the output is one head of {format.HeadDim} floats, not {output.Length}", nameof(output));
    }

    static void AccumulateValuesVector<TWidth>(KiviFormat format, ReadOnlySpan<float> probabilities, ReadOnlySpan<byte> tokens, Span<float> output)
        where TWidth : struct, ICodeWidth
    {
        int d = format.HeadDim, gv = format.ValueGroupSize, groups = format.ValueGroupsPerToken, stride = format.ValueTokenBytes;
        int chunkBytes = 2 * TWidth.Bits; // 16 channels of one token
        Span<float> bias = stackalloc float[groups]; // Σ_t p_t z_t,g
        bias.Clear();
        Span<float> ps = stackalloc float[ValueBlock * groups]; // p_t s_t,g for one block of tokens
        ref float o = ref MemoryMarshal.GetReference(output);

        for (int start = 0; start < probabilities.Length; start += ValueBlock)
        {
            int n = Math.Min(ValueBlock, probabilities.Length - start);
            ref byte first = ref Unsafe.Add(ref MemoryMarshal.GetReference(tokens), start * stride);
            for (int t = 0; t < n; t++)
            {
                float p = probabilities[start + t];
                ref byte header = ref Unsafe.Add(ref first, t * stride + format.ValueCodeBytes);
                for (int grp = 0; grp < groups; grp++)
                {
                    ps[t * groups + grp] = p * KiviCodes.HalfToSingle(Unsafe.ReadUnaligned<ushort>(ref Unsafe.Add(ref header, 2 * grp)));
                    bias[grp] += p * KiviCodes.HalfToSingle(Unsafe.ReadUnaligned<ushort>(ref Unsafe.Add(ref header, 2 * (groups + grp))));
                }
            }
            // Channel chunk outer, token inner: the 16 outputs of a chunk stay in registers over the
            // whole block, in two chains (even and odd tokens) so FMA latency is hidden.
            for (int c = 0; c < d; c += KiviFormat.Lanes)
            {
                ref float scaled = ref Unsafe.Add(ref MemoryMarshal.GetReference(ps), c / gv); // p_t s_t,g at t * groups
                ref byte chunk = ref Unsafe.Add(ref first, c / KiviFormat.Lanes * chunkBytes);
                Vector512<float> even = default, odd = default;
                int t = 0;
                for (; t + 2 <= n; t += 2)
                {
                    even = Vector512.FusedMultiplyAdd(KiviCodes.Expand16<TWidth>(ref Unsafe.Add(ref chunk, t * stride)), Vector512.Create(Unsafe.Add(ref scaled, t * groups)), even);
                    odd = Vector512.FusedMultiplyAdd(KiviCodes.Expand16<TWidth>(ref Unsafe.Add(ref chunk, (t + 1) * stride)), Vector512.Create(Unsafe.Add(ref scaled, (t + 1) * groups)), odd);
                }
                if (t < n)
                    even = Vector512.FusedMultiplyAdd(KiviCodes.Expand16<TWidth>(ref Unsafe.Add(ref chunk, t * stride)), Vector512.Create(Unsafe.Add(ref scaled, t * groups)), even);
                (Vector512.LoadUnsafe(ref o, (nuint)c) + (even + odd)).StoreUnsafe(ref o, (nuint)c);
            }
        }
        for (int c = 0; c < d; c += KiviFormat.Lanes)
            (Vector512.LoadUnsafe(ref o, (nuint)c) + Vector512.Create(bias[c / gv])).StoreUnsafe(ref o, (nuint)c);
    }
}
