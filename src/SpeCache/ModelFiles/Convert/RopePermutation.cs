// Not "...Convert": that namespace would hide System.Convert in every file under SpeCache.ModelFiles.
namespace SpeCache.ModelFiles.Conversion;

/// <summary>
/// Moves the rows of a Q or K projection between the two RoPE pair layouts. Each head's first
/// <c>ropeDim</c> rows hold the rotated pairs: NeoX keeps pair i at rows (i, i + ropeDim/2),
/// interleaved at rows (2i, 2i + 1). Rows past ropeDim are not rotated and stay put. For a full
/// rotary head this is the per-head reshape(2, d/2) -> swap -> reshape of llama.cpp's
/// convert_hf_to_gguf.py (LlamaModel.permute).
/// </summary>
public static class RopePermutation
{
    /// <summary>Row of a NeoX-layout tensor that lands at <paramref name="row"/> in the interleaved layout.</summary>
    public static long NeoXRowForInterleaved(long row, int headDim, int ropeDim)
    {
        long headStart = row - row % headDim;
        int d = (int)(row % headDim);
        if (d >= ropeDim) return row;
        int half = ropeDim / 2;
        // interleaved d = 2i + j holds member j of pair i, which NeoX keeps at j * half + i
        return headStart + (d & 1) * half + d / 2;
    }

    /// <summary>Row of an interleaved-layout tensor that lands at <paramref name="row"/> in the NeoX layout.</summary>
    public static long InterleavedRowForNeoX(long row, int headDim, int ropeDim)
    {
        long headStart = row - row % headDim;
        int d = (int)(row % headDim);
        if (d >= ropeDim) return row;
        int half = ropeDim / 2;
        // NeoX d = j * half + i holds member j of pair i, which interleaved keeps at 2i + j
        return headStart + 2 * (d % half) + d / half;
    }
}
