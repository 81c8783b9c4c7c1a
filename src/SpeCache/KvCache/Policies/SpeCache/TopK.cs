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
    public static int Select(ReadOnlySpan<float> scores, int k, Span<int> positions, Span<float> heap)
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
        for (int i = k; i < n; i++)
        {
            float s = scores[i];
            if (s <= heap[0]) continue;
            heap[0] = s;
            positions[0] = i;
            SiftDown(heap, positions, k);
        }
        positions[..k].Sort();
        return k;
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
