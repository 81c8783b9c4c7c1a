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
/// offset 4*D      codes, token-major in blocks of 16 tokens: a token's codes are a little-endian bit
///                 string (channel c at bit c*Bits) cut into W = ceil(D*Bits/32) 32-bit words, and
///                 word w of the 16 tokens of a block lies together: block b, word w, token i of the
///                 block at byte 4 * ((b*W + w)*16 + i)
/// total           4*D + G*W*4
/// </code>
/// <para>A word per token in each of 16 lanes lets the score kernel look up, for every 4 bits of a
/// token's codes (4, 2 or 1 channels), the sum of those channels' q_c*s_c in a 16-entry table built
/// once per group and query head (one permute and one add for 16 tokens), instead of turning each
/// channel's codes into floats and multiply-adding them one channel at a time. Heads whose D*Bits is
/// not a multiple of 32 (a 1-bit head of 80) pad their last word with zero codes; the size above
/// counts the padding.</para>
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

    /// <summary>Tokens of a key group whose code words lie together (the lanes of one vector).</summary>
    public const int KeyBlockTokens = 16;

    /// <summary>32-bit words of one token's key codes, the last one padded with zero codes.</summary>
    public int KeyWordsPerToken => (HeadDim * Bits + 31) / 32;

    /// <summary>Channels one 32-bit word of key codes holds.</summary>
    public int ChannelsPerKeyWord => 32 / Bits;

    /// <summary>Where the codes start in a key group, after the per-channel scales and zeros.</summary>
    public int KeyCodesOffset => 4 * HeadDim;

    /// <summary>Bytes of a key group's codes: G tokens of <see cref="KeyWordsPerToken"/> words.</summary>
    public int KeyCodeBytes => GroupSize * KeyWordsPerToken * 4;

    /// <summary>Exact bytes of one packed key group of <see cref="GroupSize"/> tokens.</summary>
    public int KeyGroupBytes => KeyCodesOffset + KeyCodeBytes;

    /// <summary>
    /// Where token <paramref name="token"/>'s code of channel <paramref name="channel"/> sits in a key
    /// group's codes: the byte offset of its 32-bit little-endian word, and its lowest bit in the word.
    /// </summary>
    public (int WordOffset, int Shift) KeyCodePlace(int token, int channel)
    {
        int bit = channel * Bits, words = KeyWordsPerToken;
        int block = token / KeyBlockTokens, lane = token % KeyBlockTokens;
        return (4 * ((block * words + bit / 32) * KeyBlockTokens + lane), bit % 32);
    }

    /// <summary>Channels per value group: the group size, but never more than one token's head.</summary>
    public int ValueGroupSize => Math.Min(GroupSize, HeadDim);

    /// <summary>Value groups (scale/zero pairs) per token.</summary>
    public int ValueGroupsPerToken => HeadDim / ValueGroupSize;

    /// <summary>Bytes of one value token's codes; its scales follow.</summary>
    public int ValueCodeBytes => HeadDim * Bits / 8;

    /// <summary>Exact bytes of one packed value token.</summary>
    public int ValueTokenBytes => ValueCodeBytes + 4 * ValueGroupsPerToken;
}
