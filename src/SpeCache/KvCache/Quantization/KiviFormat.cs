namespace SpeCache.KvCache.Quantization;

/// <summary>
/// The shape of a KIVI low-bit copy of one KV head: head size, group size and code width, and
/// the exact byte layout of a packed key group and of a packed value token. The fast tier charges
/// memory by these sizes, so they are exact, not estimates.
/// </summary>
/// <remarks>
/// <para><b>Key group</b> (<see cref="GroupSize"/> = G consecutive tokens, per-channel groups as in
/// KIVI: one scale and zero per channel, over the G tokens), <see cref="KeyGroupBytes"/> bytes:</para>
/// <code>
/// offset 0        scale[HeadDim]  Half   (2 * HeadDim bytes)  per channel
/// offset 2*D      zero[HeadDim]   Half   (2 * HeadDim bytes)  per channel
/// offset 4*D      codes, channel-major: channel c owns G*Bits/8 bytes, token t's code at bit t*Bits
///                 (little-endian bit order), so 16 consecutive tokens of a channel are 2*Bits bytes
/// total           4*D + D*G*Bits/8
/// </code>
/// <para>Channel-major codes put tokens in the vector lanes: the score kernel turns 16 tokens' codes
/// of one channel into 16 floats and multiply-adds a broadcast q_c*s_c into 16 running scores, so the
/// G scores come out as whole vectors with no horizontal sums, and the codes of a channel are
/// expanded once for every query head of a GQA group.</para>
/// <para><b>Value token</b> (per-token groups as in KIVI: one scale and zero per
/// <see cref="ValueGroupSize"/> consecutive channels of one token), <see cref="ValueTokenBytes"/> bytes:</para>
/// <code>
/// offset 0        codes: channel c's code at bit c*Bits              (D*Bits/8 bytes)
/// offset D*Bits/8 scale[D/Gv] Half, then zero[D/Gv] Half             (4 * D/Gv bytes)
/// total           D*Bits/8 + 4*D/Gv
/// </code>
/// <para>Examples, HeadDim 128 (F16 is 256 bytes per token for K, and as much for V):
/// key group G=32: 1 bit 1024 B (32 B/token), 2 bits 1536 B (48 B/token), 4 bits 2560 B (80 B/token);
/// key group G=64: 1 bit 1536 B (24 B/token), 2 bits 2560 B (40 B/token);
/// value token G=32: 1 bit 32 B, 2 bits 48 B, 4 bits 80 B; G=64: 1 bit 24 B, 2 bits 40 B.</para>
/// </remarks>
public readonly record struct KiviFormat
{
    /// <summary>Largest head size the kernels take (their scratch lives on the stack).</summary>
    public const int MaxHeadDim = 512;

    /// <summary>Tokens (or channels) one vector of codes covers: 16 float lanes of a 512-bit register.</summary>
    public const int Lanes = 16;

    /// <summary>
    /// Head sizes must be a multiple of this, so that a value token's 1-bit codes fill whole bytes.
    /// Heads that are a multiple of <see cref="Lanes"/> take the vector kernels; others (llama2.c's
    /// small models have heads of 8) take the scalar ones.
    /// </summary>
    public const int HeadDimMultiple = 8;

    /// <summary>Whether the vector kernels can read this format (whole vectors of channels).</summary>
    public bool Vectorizable => HeadDim % Lanes == 0;

    /// <param name="headDim">Channels per head; a multiple of 8, at most <see cref="MaxHeadDim"/>.</param>
    /// <param name="groupSize">Tokens per key group (and channels per value group, capped at the
    /// head size); a power of two from 16 to 256. 16 is the floor because a vector of scores holds 16 tokens.</param>
    /// <param name="bits">Bits per code: 1, 2 or 4.</param>
    public KiviFormat(int headDim, int groupSize, int bits)
    {
        if (bits is not (1 or 2 or 4))
            throw new ArgumentOutOfRangeException(nameof(bits), bits, "KIVI codes are 1, 2 or 4 bits");
        if (groupSize < 16 || groupSize > 256 || (groupSize & (groupSize - 1)) != 0)
            throw new ArgumentOutOfRangeException(nameof(groupSize), groupSize, "group size must be a power of two from 16 to 256");
        if (!HeadFits(headDim))
            throw new ArgumentOutOfRangeException(nameof(headDim), headDim, $"head size must be a positive multiple of {HeadDimMultiple} up to {MaxHeadDim}");
        if (!ValueGroupsTile(headDim, groupSize))
            throw new ArgumentOutOfRangeException(nameof(groupSize), groupSize, $"value groups of {groupSize} channels do not tile a head of {headDim}");
        HeadDim = headDim;
        GroupSize = groupSize;
        Bits = bits;
    }

    /// <summary>Whether the format holds heads of <paramref name="headDim"/> channels: a positive multiple of <see cref="HeadDimMultiple"/>, at most <see cref="MaxHeadDim"/>.</summary>
    public static bool HeadFits(int headDim) => headDim > 0 && headDim <= MaxHeadDim && headDim % HeadDimMultiple == 0;

    /// <summary>Whether value groups of <paramref name="groupSize"/> channels (capped at the head size) tile a head that <see cref="HeadFits"/>.</summary>
    public static bool ValueGroupsTile(int headDim, int groupSize) => headDim % Math.Min(groupSize, headDim) == 0;

    public int HeadDim { get; }
    public int GroupSize { get; }
    public int Bits { get; }

    /// <summary>Largest code, 2^Bits - 1.</summary>
    public int MaxCode => (1 << Bits) - 1;

    /// <summary>Bytes of one channel's codes in a key group: G tokens of Bits each.</summary>
    public int KeyChannelBytes => GroupSize * Bits / 8;

    /// <summary>Where the codes start in a key group, after the per-channel scales and zeros.</summary>
    public int KeyCodesOffset => 4 * HeadDim;

    /// <summary>Exact bytes of one packed key group of <see cref="GroupSize"/> tokens.</summary>
    public int KeyGroupBytes => KeyCodesOffset + HeadDim * KeyChannelBytes;

    /// <summary>Channels per value group: the group size, but never more than one token's head.</summary>
    public int ValueGroupSize => Math.Min(GroupSize, HeadDim);

    /// <summary>Value groups (scale/zero pairs) per token.</summary>
    public int ValueGroupsPerToken => HeadDim / ValueGroupSize;

    /// <summary>Bytes of one value token's codes; its scales follow.</summary>
    public int ValueCodeBytes => HeadDim * Bits / 8;

    /// <summary>Exact bytes of one packed value token.</summary>
    public int ValueTokenBytes => ValueCodeBytes + 4 * ValueGroupsPerToken;
}
