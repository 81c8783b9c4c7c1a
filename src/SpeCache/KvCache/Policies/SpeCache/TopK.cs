using System.Numerics;
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
        int at = 0;
        if (chunked && LowerBound(scores, k) is float floor)
        {
            // Seeded with k placeholders just below the floor, the heap admits exactly the scores at
            // or above it, and its root rises past the floor only once k of them are in (there are at
            // least k, so none of the placeholders is left).
            heap[..k].Fill(MathF.BitDecrement(floor));
            positions[..k].Fill(-1);
        }
        else
        {
            for (; at < k; at++)
            {
                heap[at] = scores[at];
                positions[at] = at;
                SiftUp(heap, positions, at);
            }
        }
        if (chunked)
        {
            // A vector of scores against the root at once: only the scores above it (or NaN, which
            // the scalar test below admits too) go through one by one, in order, so the heap sees
            // the same sequence as the plain loop. At 32K positions and k = 64 almost every chunk
            // has none; the scalar compare-and-branch per score was 3 % of a specache decode step.
            ref float first = ref MemoryMarshal.GetReference(scores);
            if (Vector512.IsHardwareAccelerated)
                for (; at + 16 <= n; at += 16)
                    OfferEach(~Vector512.LessThanOrEqual(Vector512.LoadUnsafe(ref first, (nuint)at), Vector512.Create(heap[0])).ExtractMostSignificantBits() & 0xFFFF, at, scores, heap, positions, k);
            else if (Vector256.IsHardwareAccelerated)
                for (; at + 8 <= n; at += 8)
                    OfferEach(~Vector256.LessThanOrEqual(Vector256.LoadUnsafe(ref first, (nuint)at), Vector256.Create(heap[0])).ExtractMostSignificantBits() & 0xFF, at, scores, heap, positions, k);
            else
                for (; at + 4 <= n; at += 4)
                    OfferEach(~Vector128.LessThanOrEqual(Vector128.LoadUnsafe(ref first, (nuint)at), Vector128.Create(heap[0])).ExtractMostSignificantBits() & 0xF, at, scores, heap, positions, k);
        }
        for (; at < n; at++) Offer(scores[at], at, heap, positions, k);
        positions[..k].Sort();
        return k;
    }

    /// <summary>
    /// A score no top-k member is below: the least of the maxima of k disjoint chunks (k scores at
    /// distinct positions are at or above it). A heap seeded from the first k scores starts with its
    /// root near the row's bottom and takes about k ln(n/k) replacements on unordered scores (266
    /// sift-downs for 64 of 4096, most of a specache step's top-k); seeded at this floor, far fewer.
    /// Null where the plain scan is the one to take: rows holding a NaN (which the heap admits in
    /// its own way), an infinity, or a floor of -∞.
    /// </summary>
    static float? LowerBound(ReadOnlySpan<float> scores, int k)
    {
        if (!Vector256.IsHardwareAccelerated) return null;
        int n = scores.Length, chunk = n / k;
        ref float first = ref MemoryMarshal.GetReference(scores);
        float floor = float.PositiveInfinity;
        // Any NaN or infinity among the scores makes their sum NaN or infinite.
        var sum = Vector256<float>.Zero;
        float tailSum = 0;
        for (int start = 0; start < k * chunk; start += chunk)
        {
            var max = Vector256.Create(float.NegativeInfinity);
            int i = start;
            for (; i + 8 <= start + chunk; i += 8)
            {
                var x = Vector256.LoadUnsafe(ref first, (nuint)i);
                max = Vector256.MaxNative(max, x);
                sum += x;
            }
            var half = Vector128.MaxNative(max.GetLower(), max.GetUpper());
            half = Vector128.MaxNative(half, Vector128.Shuffle(half, Vector128.Create(2, 3, 0, 1)));
            float m = MathF.Max(half.ToScalar(), half.GetElement(1));
            for (; i < start + chunk; i++)
            {
                m = MathF.Max(m, scores[i]);
                tailSum += scores[i];
            }
            floor = MathF.Min(floor, m);
        }
        for (int i = k * chunk; i < n; i++) tailSum += scores[i];
        return float.IsFinite(Vector256.Sum(sum) + tailSum) && floor > float.NegativeInfinity ? floor : null;
    }

    /// <summary>Offers the chunk's scores at <paramref name="at"/> + each set bit of <paramref name="candidates"/>, lowest first.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void OfferEach(ulong candidates, int at, ReadOnlySpan<float> scores, Span<float> heap, Span<int> positions, int k)
    {
        for (; candidates != 0; candidates &= candidates - 1)
        {
            int i = at + BitOperations.TrailingZeroCount(candidates);
            Offer(scores[i], i, heap, positions, k);
        }
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

    /// <summary>The root sinks to its place: each smaller child moves up into the hole, the root is written once at the end.</summary>
    static void SiftDown(Span<float> heap, Span<int> positions, int count)
    {
        ref float scores = ref MemoryMarshal.GetReference(heap);
        ref int places = ref MemoryMarshal.GetReference(positions);
        float score = scores;
        int position = places, hole = 0;
        while (true)
        {
            int child = 2 * hole + 1;
            if (child >= count) break;
            if (child + 1 < count && Before(Unsafe.Add(ref scores, child + 1), Unsafe.Add(ref places, child + 1), Unsafe.Add(ref scores, child), Unsafe.Add(ref places, child)))
                child++;
            if (!Before(Unsafe.Add(ref scores, child), Unsafe.Add(ref places, child), score, position)) break;
            Unsafe.Add(ref scores, hole) = Unsafe.Add(ref scores, child);
            Unsafe.Add(ref places, hole) = Unsafe.Add(ref places, child);
            hole = child;
        }
        Unsafe.Add(ref scores, hole) = score;
        Unsafe.Add(ref places, hole) = position;
    }

    /// <summary><see cref="Less"/> on values: entry (a, at a) drops before entry (b, at b).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static bool Before(float a, int atA, float b, int atB) => a < b || (a == b && atA > atB);

    // The heap's root is the entry to drop first: the lowest score, and among equal scores the later position.
    static bool Less(Span<float> heap, Span<int> positions, int a, int b) => Before(heap[a], positions[a], heap[b], positions[b]);

    static void Swap(Span<float> heap, Span<int> positions, int a, int b)
    {
        (heap[a], heap[b]) = (heap[b], heap[a]);
        (positions[a], positions[b]) = (positions[b], positions[a]);
    }
}
