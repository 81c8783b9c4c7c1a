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
/// <para>A word per token in each of 16 lanes lets the 1-bit score kernel look up, for every 4 bits
/// of a token's codes (4 channels), the sum of those channels' q_c*s_c in a 16-entry table built
/// once per group and query head (one permute and one add for 16 tokens), instead of turning each
/// channel's codes into floats and multiply-adding them one channel at a time (which 2 and 4 bits
/// still do, one shift, mask and conversion per channel). Heads whose D*Bits is
/// not a multiple of 32 (a 1-bit head of 80) pad their last word with zero codes; the size above
/// counts the padding.</para>
/// <para><b>Value token</b> (per-token groups as in KIVI: one scale and zero per
/// <see cref="ValueGroupSize"/> consecutive channels of one token): <see cref="ValueTokenBytes"/> =
/// D*Bits/8 + 4*D/Gv bytes of codes, scales and zeros, kept in blocks of 16 consecutive tokens,
/// <see cref="ValueBlockBytes"/> bytes each:</para>
/// <code>
/// offset 0        codes: runs of R = 4/Bits tokens (4 at 1 bit, 2 at 2, 1 at 4); a run is D
///                 nibbles, channel c's at bit 4c, and token j of the run at bit j*Bits of it
///                 (16*D*Bits/8 bytes)
/// then            scale[D/Gv][16] Half, then zero[D/Gv][16] Half: group g of block token i at g*16+i
/// total           16 * (D*Bits/8 + 4*D/Gv)
/// </code>
/// <para>The value kernel mirrors the key kernel: the 4 bits of a channel's nibble (R tokens' codes)
/// take one of 16 values, so per run and query head it tabulates the 16 sums of those tokens'
/// p_t*s_t, and 16 channels cost one permute and one add per run and head. Scales and zeros of 16
/// tokens side by side load as one vector each.</para>
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
    /// Head sizes must be a multiple of this, so that a value token's 1-bit codes fill whole bytes
    /// (and the 256- and 128-bit kernels read whole vectors of 8 or 4 channels). Heads that are a
    /// multiple of <see cref="Lanes"/> also take the 512-bit kernels; others (llama2.c's small models
    /// have heads of 8) the narrower ones.
    /// </summary>
    public const int HeadDimMultiple = 8;

    /// <summary>Whether the 512-bit kernels can read this format (whole 16-lane vectors of channels).</summary>
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

    /// <summary>Tokens of a block: key codes of this many tokens lie word by word together (the lanes of one vector), and values are kept in blocks of this many.</summary>
    public const int BlockTokens = 16;

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
        int bit = channel * Bits;
        return (4 * KeyWordIndex(token, bit / 32), bit % 32);
    }

    /// <summary>
    /// Which 32-bit word of a key group's codes holds word <paramref name="word"/> of token
    /// <paramref name="token"/>'s codes: block b's word w of its 16 tokens lie together, so 8 or 16
    /// consecutive tokens from a multiple of 8 load as one vector from here.
    /// </summary>
    public int KeyWordIndex(int token, int word) => (token / BlockTokens * KeyWordsPerToken + word) * BlockTokens + token % BlockTokens;

    /// <summary>Channels per value group: the group size, but never more than one token's head.</summary>
    public int ValueGroupSize => Math.Min(GroupSize, HeadDim);

    /// <summary>Value groups (scale/zero pairs) per token.</summary>
    public int ValueGroupsPerToken => HeadDim / ValueGroupSize;

    /// <summary>Bytes of one value token's codes, D*Bits/8.</summary>
    public int ValueCodeBytes => HeadDim * Bits / 8;

    /// <summary>Bytes one value token takes: its codes, scales and zeros.</summary>
    public int ValueTokenBytes => ValueCodeBytes + 4 * ValueGroupsPerToken;

    /// <summary>Exact bytes of one block of <see cref="BlockTokens"/> value tokens.</summary>
    public int ValueBlockBytes => BlockTokens * ValueTokenBytes;

    /// <summary>Where a value block's scales start, after its codes; its zeros follow them.</summary>
    public int ValueScalesOffset => BlockTokens * ValueCodeBytes;

    /// <summary>Tokens whose codes share one nibble per channel in a value block (a run): 4 / Bits.</summary>
    public int ValueRunTokens => 4 / Bits;

    /// <summary>Exact bytes of <paramref name="tokens"/> value tokens: whole blocks, the last one maybe part empty.</summary>
    public long ValueBytes(long tokens) => (tokens + BlockTokens - 1) / BlockTokens * ValueBlockBytes;

    /// <summary>
    /// Where value token <paramref name="token"/>'s code of channel <paramref name="channel"/> sits:
    /// the byte (from the start of all value blocks) and its lowest bit in the byte.
    /// </summary>
    public (long ByteOffset, int Shift) ValueCodePlace(long token, int channel)
    {
        long block = token / BlockTokens;
        int i = (int)(token % BlockTokens), run = i / ValueRunTokens, j = i % ValueRunTokens;
        int bit = (run * HeadDim + channel) * 4 + j * Bits;
        return (block * ValueBlockBytes + bit / 8, bit % 8);
    }

    /// <summary>Byte offset (from the start of all value blocks) of token <paramref name="token"/>'s Half scale of channel group <paramref name="group"/>; its zero is <see cref="ValueZeroDistance"/> further.</summary>
    public long ValueScaleOffset(long token, int group) =>
        token / BlockTokens * ValueBlockBytes + ValueScalesOffset + 2 * (group * BlockTokens + token % BlockTokens);

    /// <summary>Bytes from a scale to the zero of the same token and group.</summary>
    public int ValueZeroDistance => 2 * ValueGroupsPerToken * BlockTokens;
}
