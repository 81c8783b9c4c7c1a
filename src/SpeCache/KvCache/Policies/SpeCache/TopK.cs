using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace SpeCache.KvCache.Policies.SpeCache;

/// <summary>Top-k selection over a row of scores, without sorting the row.</summary>
public static class TopK
{
    /// <summary>
    /// Writes the positions of the <c>min(k, n)</c> largest of <paramref name="scores"/> into
    /// <paramref name="positions"/>, in ascending position order (so lookups can binary-search
    /// them and host reads go forward), and returns how many. Ties keep the earlier position.
    /// </summary>
    /// <param name="heap">Scratch of at least k floats for the running minimum heap of scores.</param>
    public static int Select(ReadOnlySpan<float> scores, int k, Span<int> positions, Span<float> heap) =>
        Select(scores, k, positions, heap, chunked: Vector128.IsHardwareAccelerated);

    /// <param name="chunked">Compare a vector of scores at a time against the heap's root, 16 or 8 or 4 as the CPU has them (tests compare it with the plain loop).</param>
    internal static int Select(ReadOnlySpan<float> scores, int k, Span<int> positions, Span<float> heap, bool chunked)
    {
        int n = scores.Length;
        if (k >= n)
        {
            for (int i = 0; i < n; i++) positions[i] = i;
            return n;
        }
        if (k <= 0) return 0;
        // A min-heap of the k best so far: O(n log k), and for n >> k most scores fail the first
        // comparison against the heap's root, so the loop is mostly a compare and a branch.
        for (int i = 0; i < k; i++)
        {
            heap[i] = scores[i];
            positions[i] = i;
            SiftUp(heap, positions, i);
        }
        int at = k;
        if (chunked)
        {
            // A vector of scores against the root at once: only a chunk with a score above it (or a NaN,
            // which the scalar test below admits too) goes through one by one, in order, so the
            // heap sees the same sequence as the plain loop. At 32K positions and k = 64 almost
            // every chunk is skipped; the scalar compare-and-branch per score was 3 % of a specache
            // decode step.
            ref float first = ref MemoryMarshal.GetReference(scores);
            if (Vector512.IsHardwareAccelerated)
                for (; at + 16 <= n; at += 16)
                {
                    if (Vector512.LessThanOrEqualAll(Vector512.LoadUnsafe(ref first, (nuint)at), Vector512.Create(heap[0]))) continue;
                    for (int i = at; i < at + 16; i++) Offer(scores[i], i, heap, positions, k);
                }
            else if (Vector256.IsHardwareAccelerated)
                for (; at + 8 <= n; at += 8)
                {
                    if (Vector256.LessThanOrEqualAll(Vector256.LoadUnsafe(ref first, (nuint)at), Vector256.Create(heap[0]))) continue;
                    for (int i = at; i < at + 8; i++) Offer(scores[i], i, heap, positions, k);
                }
            else
                for (; at + 4 <= n; at += 4)
                {
                    if (Vector128.LessThanOrEqualAll(Vector128.LoadUnsafe(ref first, (nuint)at), Vector128.Create(heap[0]))) continue;
                    for (int i = at; i < at + 4; i++) Offer(scores[i], i, heap, positions, k);
                }
        }
        for (; at < n; at++) Offer(scores[at], at, heap, positions, k);
        positions[..k].Sort();
        return k;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void Offer(float score, int position, Span<float> heap, Span<int> positions, int k)
    {
        if (score <= heap[0]) return;
        heap[0] = score;
        positions[0] = position;
        SiftDown(heap, positions, k);
    }

    static void SiftUp(Span<float> heap, Span<int> positions, int i)
    {
        while (i > 0)
        {
            int parent = (i - 1) / 2;
            if (!Less(heap, positions, i, parent)) break;
            Swap(heap, positions, i, parent);
            i = parent;
        }
    }

    static void SiftDown(Span<float> heap, Span<int> positions, int count)
    {
        int i = 0;
        while (true)
        {
            int left = 2 * i + 1, smallest = i;
            if (left < count && Less(heap, positions, left, smallest)) smallest = left;
            if (left + 1 < count && Less(heap, positions, left + 1, smallest)) smallest = left + 1;
            if (smallest == i) return;
            Swap(heap, positions, i, smallest);
            i = smallest;
        }
    }

    // The heap's root is the entry to drop first: the lowest score, and among equal scores the later position.
    static bool Less(Span<float> heap, Span<int> positions, int a, int b) =>
        heap[a] < heap[b] || (heap[a] == heap[b] && positions[a] > positions[b]);

    static void Swap(Span<float> heap, Span<int> positions, int a, int b)
    {
        (heap[a], heap[b]) = (heap[b], heap[a]);
        (positions[a], positions[b]) = (positions[b], positions[a]);
    }
}
