using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using SpeCache.Quants;

namespace SpeCache.KvCache;

/// <summary>
/// Attention kernels for four query heads at once: the GQA group of Llama-3 models is 4 (or a
/// multiple of 4 in a prefill block), and four heads sharing every key and value load keep their
/// results in registers. Used by the prefill kernel (<see cref="CausalAttention"/>) and by the
/// full cache's decode step.
/// </summary>
internal static unsafe class AttentionQuads
{
    /// <summary>
    /// The widest vectors the kernels take for heads of <paramref name="headDim"/> on this CPU: 512
    /// or 256, or 0 where only the plain loops run (slower than one dot per head: callers then keep theirs).
    /// </summary>
    public static int VectorBits(int headDim) =>
        Vector512.IsHardwareAccelerated && headDim % 16 == 0 ? 512 : Vector256.IsHardwareAccelerated && headDim % 8 == 0 ? 256 : 0;

    /// <summary>The kernels on float keys and values (the prefill kernel's rows, decoded tiles).</summary>
    public static void AccumulateValues(int vectorBits, float* p, int pStride, float* v, int stride, int n, float* o, int d) =>
        AccumulateValues<SingleElement>(vectorBits, p, pStride, (byte*)v, stride, n, o, d);

    /// <summary>The kernels on float keys.</summary>
    public static void Scores(int vectorBits, float* q, float* k, int n, int d, float scale, float* s, int sStride) =>
        Scores<SingleElement>(vectorBits, q, (byte*)k, n, d, scale, s, sStride);

    /// <summary>
    /// Adds four query heads' weighted values of <paramref name="n"/> positions to their outputs:
    /// head r's weight of position t at p[r × pStride + t], position t's value at v[t × stride],
    /// head r's output at o[r × d]. <paramref name="vectorBits"/> 512 needs d a multiple of 16, 256
    /// a multiple of 8; 0 runs plain loops (which skip zero weights).
    /// </summary>
    public static void AccumulateValues<TElement>(int vectorBits, float* p, int pStride, byte* v, int stride, int n, float* o, int d)
        where TElement : IKvElement
    {
        int c = 0;
        if (vectorBits == 512)
        {
            for (; c + 64 <= d; c += 64) Accumulate512x4<TElement>(p, pStride, v + c * TElement.Size, stride, n, o + c, d);
            for (; c < d; c += 16) Accumulate512x1<TElement>(p, pStride, v + c * TElement.Size, stride, n, o + c, d);
        }
        else if (vectorBits == 256)
        {
            for (; c + 16 <= d; c += 16) Accumulate256x2<TElement>(p, pStride, v + c * TElement.Size, stride, n, o + c, d);
            for (; c < d; c += 8) Accumulate256x1<TElement>(p, pStride, v + c * TElement.Size, stride, n, o + c, d);
        }
        else
        {
            for (int r = 0; r < 4; r++)
                for (int t = 0; t < n; t++)
                {
                    float w = p[r * pStride + t];
                    if (w == 0) continue;
                    for (int i = 0; i < d; i++) o[r * d + i] += w * TElement.Load(v + ((long)t * stride + i) * TElement.Size);
                }
        }
    }

    /// <summary>
    /// Scores of four query heads (head r at q[r × d]) against <paramref name="n"/> keys (position
    /// t at k[t × d]), times <paramref name="scale"/>, into s[r × sStride + t]. Each key is loaded
    /// once for the four heads, and the four dot products' horizontal sums are done together.
    /// <paramref name="vectorBits"/> as in <see cref="AccumulateValues"/>.
    /// </summary>
    public static void Scores<TElement>(int vectorBits, float* q, byte* k, int n, int d, float scale, float* s, int sStride)
        where TElement : IKvElement
    {
        if (vectorBits == 512) Scores512<TElement>(q, k, n, d, scale, s, sStride);
        else if (vectorBits == 256) Scores256<TElement>(q, k, n, d, scale, s, sStride);
        else
        {
            for (int r = 0; r < 4; r++)
                for (int t = 0; t < n; t++)
                {
                    float sum = 0;
                    for (int i = 0; i < d; i++) sum += q[r * d + i] * TElement.Load(k + ((long)t * d + i) * TElement.Size);
                    s[r * sStride + t] = sum * scale;
                }
        }
    }

    /// <summary>
    /// <see cref="Scores"/> in 512 bits (d a multiple of 16), four positions per pass: sixteen dot
    /// products in flight, where one position's four chains of d / 16 dependent multiply-adds left
    /// the multiplier waiting on their latency, and their sixteen horizontal sums done as one tree
    /// whose last step leaves each head's four scores side by side, stored as one 128-bit vector
    /// (a position at a time, the sums of four registers cost about a dozen instructions and their
    /// results four scalar stores). perf had the one-position pass at 20 % of a 16K-token decode
    /// step of the full cache, reading keys at 14 GB/s against the value pass's 19.
    /// </summary>
    static void Scores512<TElement>(float* q, byte* k, int n, int d, float scale, float* s, int sStride)
        where TElement : IKvElement
    {
        float* q1 = q + d, q2 = q1 + d, q3 = q2 + d;
        nint rowBytes = (nint)d * TElement.Size;
        var scales = Vector128.Create(scale);
        int t = 0;
        for (; t + 4 <= n; t += 4)
        {
            // a{position}{head}
            Vector512<float> a00 = default, a01 = default, a02 = default, a03 = default;
            Vector512<float> a10 = default, a11 = default, a12 = default, a13 = default;
            Vector512<float> a20 = default, a21 = default, a22 = default, a23 = default;
            Vector512<float> a30 = default, a31 = default, a32 = default, a33 = default;
            byte* key = k + t * rowBytes;
            for (nint i = 0; i < d; i += 16, key += 16 * TElement.Size)
            {
                var h0 = Vector512.Load(q + i);
                var h1 = Vector512.Load(q1 + i);
                var h2 = Vector512.Load(q2 + i);
                var h3 = Vector512.Load(q3 + i);
                var x = TElement.Load512(key);
                a00 = Vector512.FusedMultiplyAdd(x, h0, a00);
                a01 = Vector512.FusedMultiplyAdd(x, h1, a01);
                a02 = Vector512.FusedMultiplyAdd(x, h2, a02);
                a03 = Vector512.FusedMultiplyAdd(x, h3, a03);
                x = TElement.Load512(key + rowBytes);
                a10 = Vector512.FusedMultiplyAdd(x, h0, a10);
                a11 = Vector512.FusedMultiplyAdd(x, h1, a11);
                a12 = Vector512.FusedMultiplyAdd(x, h2, a12);
                a13 = Vector512.FusedMultiplyAdd(x, h3, a13);
                x = TElement.Load512(key + 2 * rowBytes);
                a20 = Vector512.FusedMultiplyAdd(x, h0, a20);
                a21 = Vector512.FusedMultiplyAdd(x, h1, a21);
                a22 = Vector512.FusedMultiplyAdd(x, h2, a22);
                a23 = Vector512.FusedMultiplyAdd(x, h3, a23);
                x = TElement.Load512(key + 3 * rowBytes);
                a30 = Vector512.FusedMultiplyAdd(x, h0, a30);
                a31 = Vector512.FusedMultiplyAdd(x, h1, a31);
                a32 = Vector512.FusedMultiplyAdd(x, h2, a32);
                a33 = Vector512.FusedMultiplyAdd(x, h3, a33);
            }
            // Per position, 128-bit chunk r = head r's four partial sums; then across positions,
            // chunk r = head r's four totals, one per position.
            var byHead = Transpose4(ChunkSums(a00, a01, a02, a03), ChunkSums(a10, a11, a12, a13),
                ChunkSums(a20, a21, a22, a23), ChunkSums(a30, a31, a32, a33));
            (byHead.GetLower().GetLower() * scales).Store(s + t);
            (byHead.GetLower().GetUpper() * scales).Store(s + sStride + t);
            (byHead.GetUpper().GetLower() * scales).Store(s + 2 * sStride + t);
            (byHead.GetUpper().GetUpper() * scales).Store(s + 3 * sStride + t);
        }
        for (; t < n; t++)
        {
            byte* key = k + (long)t * d * TElement.Size;
            Vector512<float> a0 = default, a1 = default, a2 = default, a3 = default;
            for (int i = 0; i < d; i += 16)
            {
                var kv = TElement.Load512(key + i * TElement.Size);
                a0 = Vector512.FusedMultiplyAdd(kv, Vector512.Load(q + i), a0);
                a1 = Vector512.FusedMultiplyAdd(kv, Vector512.Load(q + d + i), a1);
                a2 = Vector512.FusedMultiplyAdd(kv, Vector512.Load(q + 2 * d + i), a2);
                a3 = Vector512.FusedMultiplyAdd(kv, Vector512.Load(q + 3 * d + i), a3);
            }
            StoreColumn(Sum4(a0, a1, a2, a3) * scale, s + t, sStride);
        }
    }

    /// <summary>
    /// <see cref="Scores"/> in 256 bits (d a multiple of 8), two positions per pass: eight dot
    /// products in flight hide the multiply-add latency that one position's four chains expose
    /// (each is d / 8 dependent multiply-adds), and the key of the second position is loaded once
    /// for the four heads like the first.
    /// </summary>
    static void Scores256<TElement>(float* q, byte* k, int n, int d, float scale, float* s, int sStride)
        where TElement : IKvElement
    {
        float* q1 = q + d, q2 = q1 + d, q3 = q2 + d;
        nint rowBytes = (nint)d * TElement.Size;
        byte* key = k;
        int t = 0;
        for (; t + 2 <= n; t += 2, key += 2 * rowBytes)
        {
            Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default;
            Vector256<float> b0 = default, b1 = default, b2 = default, b3 = default;
            byte* k0At = key;
            for (nint i = 0; i < d; i += 8, k0At += 8 * TElement.Size)
            {
                var k0 = TElement.Load256(k0At);
                var k1 = TElement.Load256(k0At + rowBytes);
                var h = Vector256.Load(q + i);
                a0 = Vector256.FusedMultiplyAdd(k0, h, a0);
                b0 = Vector256.FusedMultiplyAdd(k1, h, b0);
                h = Vector256.Load(q1 + i);
                a1 = Vector256.FusedMultiplyAdd(k0, h, a1);
                b1 = Vector256.FusedMultiplyAdd(k1, h, b1);
                h = Vector256.Load(q2 + i);
                a2 = Vector256.FusedMultiplyAdd(k0, h, a2);
                b2 = Vector256.FusedMultiplyAdd(k1, h, b2);
                h = Vector256.Load(q3 + i);
                a3 = Vector256.FusedMultiplyAdd(k0, h, a3);
                b3 = Vector256.FusedMultiplyAdd(k1, h, b3);
            }
            StoreColumn(Sum4(a0, a1, a2, a3) * scale, s + t, sStride);
            StoreColumn(Sum4(b0, b1, b2, b3) * scale, s + t + 1, sStride);
        }
        for (; t < n; t++, key += rowBytes)
        {
            Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default;
            for (nint i = 0; i < d; i += 8)
            {
                var k0 = TElement.Load256(key + i * TElement.Size);
                a0 = Vector256.FusedMultiplyAdd(k0, Vector256.Load(q + i), a0);
                a1 = Vector256.FusedMultiplyAdd(k0, Vector256.Load(q1 + i), a1);
                a2 = Vector256.FusedMultiplyAdd(k0, Vector256.Load(q2 + i), a2);
                a3 = Vector256.FusedMultiplyAdd(k0, Vector256.Load(q3 + i), a3);
            }
            StoreColumn(Sum4(a0, a1, a2, a3) * scale, s + t, sStride);
        }
    }

    /// <summary>Lane r of <paramref name="x"/> into s[r × sStride], r &lt; 4.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void StoreColumn(Vector128<float> x, float* s, int sStride)
    {
        s[0] = x.ToScalar();
        s[sStride] = x.GetElement(1);
        s[2 * sStride] = x.GetElement(2);
        s[3 * sStride] = x.GetElement(3);
    }

    /// <summary>The lane sums of four 256-bit registers, as the four lanes of one: three horizontal adds and one add of the halves.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Vector128<float> Sum4(Vector256<float> a, Vector256<float> b, Vector256<float> c, Vector256<float> d)
    {
        if (!Avx.IsSupported)
            return Vector128.Create(Vector256.Sum(a), Vector256.Sum(b), Vector256.Sum(c), Vector256.Sum(d));
        // Per 128-bit half: [a0+a1, a2+a3, b0+b1, b2+b3], then [a0..a3, b0..b3, c0..c3, d0..d3].
        var abcd = Avx.HorizontalAdd(Avx.HorizontalAdd(a, b), Avx.HorizontalAdd(c, d));
        return abcd.GetLower() + abcd.GetUpper();
    }

    /// <summary>Four registers folded to one whose 128-bit chunk r holds register r's four partial sums (lane sums of chunk r are register r's total).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Vector512<float> ChunkSums(Vector512<float> a, Vector512<float> b, Vector512<float> c, Vector512<float> d)
    {
        var ab = Avx512F.Shuffle4x128(a, b, 0x44) + Avx512F.Shuffle4x128(a, b, 0xEE); // [a0+a2, a1+a3, b0+b2, b1+b3]
        var cd = Avx512F.Shuffle4x128(c, d, 0x44) + Avx512F.Shuffle4x128(c, d, 0xEE);
        return Avx512F.Shuffle4x128(ab, cd, 0x88) + Avx512F.Shuffle4x128(ab, cd, 0xDD);
    }

    /// <summary>
    /// From four <see cref="ChunkSums"/> (one per position p, chunk r for head r), one register whose
    /// chunk r lane p is the total of position p's chunk r: each head's four scores in a row.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Vector512<float> Transpose4(Vector512<float> p0, Vector512<float> p1, Vector512<float> p2, Vector512<float> p3)
    {
        // Within each chunk: [p0 0+2, p1 0+2, p0 1+3, p1 1+3], then the two halves of each position's pair added.
        var u = Avx512F.UnpackLow(p0, p1) + Avx512F.UnpackHigh(p0, p1);
        var v = Avx512F.UnpackLow(p2, p3) + Avx512F.UnpackHigh(p2, p3);
        return Avx512F.Shuffle(u, v, 0x44) + Avx512F.Shuffle(u, v, 0xEE);
    }

    /// <summary>Four registers' lane sums, every lane of 128-bit chunk r holding register r's.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector512<float> ChunkTotals(Vector512<float> a, Vector512<float> b, Vector512<float> c, Vector512<float> d)
    {
        var abcd = ChunkSums(a, b, c, d);
        // Within each chunk: (0+1, 2+3) then their sum, in every lane.
        abcd += Avx512F.Permute4x32(abcd, 0xB1);
        return abcd + Avx512F.Permute4x32(abcd, 0x4E);
    }

    /// <summary>The lane sums of four registers, as the four lanes of one.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Vector128<float> Sum4(Vector512<float> a, Vector512<float> b, Vector512<float> c, Vector512<float> d)
    {
        var abcd = ChunkTotals(a, b, c, d);
        return Vector128.Create(abcd.GetElement(0), abcd.GetElement(4), abcd.GetElement(8), abcd.GetElement(12));
    }

    /// <summary>Four query heads × 64 of the head's dimensions: 16 accumulators over the tile's positions.</summary>
    static void Accumulate512x4<TElement>(float* p, int pStride, byte* v, int stride, int n, float* o, int d)
        where TElement : IKvElement
    {
        float* o1 = o + d, o2 = o1 + d, o3 = o2 + d;
        float* p1 = p + pStride, p2 = p1 + pStride, p3 = p2 + pStride;
        var a00 = Vector512.Load(o); var a01 = Vector512.Load(o + 16); var a02 = Vector512.Load(o + 32); var a03 = Vector512.Load(o + 48);
        var a10 = Vector512.Load(o1); var a11 = Vector512.Load(o1 + 16); var a12 = Vector512.Load(o1 + 32); var a13 = Vector512.Load(o1 + 48);
        var a20 = Vector512.Load(o2); var a21 = Vector512.Load(o2 + 16); var a22 = Vector512.Load(o2 + 32); var a23 = Vector512.Load(o2 + 48);
        var a30 = Vector512.Load(o3); var a31 = Vector512.Load(o3 + 16); var a32 = Vector512.Load(o3 + 32); var a33 = Vector512.Load(o3 + 48);
        for (int t = 0; t < n; t++)
        {
            byte* value = v + (long)t * stride * TElement.Size;
            var v0 = TElement.Load512(value);
            var v1 = TElement.Load512(value + 16 * TElement.Size);
            var v2 = TElement.Load512(value + 32 * TElement.Size);
            var v3 = TElement.Load512(value + 48 * TElement.Size);
            var w = Vector512.Create(p[t]);
            a00 = Vector512.FusedMultiplyAdd(v0, w, a00);
            a01 = Vector512.FusedMultiplyAdd(v1, w, a01);
            a02 = Vector512.FusedMultiplyAdd(v2, w, a02);
            a03 = Vector512.FusedMultiplyAdd(v3, w, a03);
            w = Vector512.Create(p1[t]);
            a10 = Vector512.FusedMultiplyAdd(v0, w, a10);
            a11 = Vector512.FusedMultiplyAdd(v1, w, a11);
            a12 = Vector512.FusedMultiplyAdd(v2, w, a12);
            a13 = Vector512.FusedMultiplyAdd(v3, w, a13);
            w = Vector512.Create(p2[t]);
            a20 = Vector512.FusedMultiplyAdd(v0, w, a20);
            a21 = Vector512.FusedMultiplyAdd(v1, w, a21);
            a22 = Vector512.FusedMultiplyAdd(v2, w, a22);
            a23 = Vector512.FusedMultiplyAdd(v3, w, a23);
            w = Vector512.Create(p3[t]);
            a30 = Vector512.FusedMultiplyAdd(v0, w, a30);
            a31 = Vector512.FusedMultiplyAdd(v1, w, a31);
            a32 = Vector512.FusedMultiplyAdd(v2, w, a32);
            a33 = Vector512.FusedMultiplyAdd(v3, w, a33);
        }
        a00.Store(o); a01.Store(o + 16); a02.Store(o + 32); a03.Store(o + 48);
        a10.Store(o1); a11.Store(o1 + 16); a12.Store(o1 + 32); a13.Store(o1 + 48);
        a20.Store(o2); a21.Store(o2 + 16); a22.Store(o2 + 32); a23.Store(o2 + 48);
        a30.Store(o3); a31.Store(o3 + 16); a32.Store(o3 + 32); a33.Store(o3 + 48);
    }

    /// <summary>Four query heads × 16 dimensions (heads that are not a multiple of 64 wide).</summary>
    static void Accumulate512x1<TElement>(float* p, int pStride, byte* v, int stride, int n, float* o, int d)
        where TElement : IKvElement
    {
        var a0 = Vector512.Load(o);
        var a1 = Vector512.Load(o + d);
        var a2 = Vector512.Load(o + 2 * d);
        var a3 = Vector512.Load(o + 3 * d);
        for (int t = 0; t < n; t++)
        {
            var value = TElement.Load512(v + (long)t * stride * TElement.Size);
            a0 = Vector512.FusedMultiplyAdd(value, Vector512.Create(p[t]), a0);
            a1 = Vector512.FusedMultiplyAdd(value, Vector512.Create(p[pStride + t]), a1);
            a2 = Vector512.FusedMultiplyAdd(value, Vector512.Create(p[2 * pStride + t]), a2);
            a3 = Vector512.FusedMultiplyAdd(value, Vector512.Create(p[3 * pStride + t]), a3);
        }
        a0.Store(o);
        a1.Store(o + d);
        a2.Store(o + 2 * d);
        a3.Store(o + 3 * d);
    }

    /// <summary>Four query heads × 16 dimensions in two 256-bit halves: 8 accumulators.</summary>
    static void Accumulate256x2<TElement>(float* p, int pStride, byte* v, int stride, int n, float* o, int d)
        where TElement : IKvElement
    {
        float* o1 = o + d, o2 = o1 + d, o3 = o2 + d;
        float* p1 = p + pStride, p2 = p1 + pStride, p3 = p2 + pStride;
        var a00 = Vector256.Load(o); var a01 = Vector256.Load(o + 8);
        var a10 = Vector256.Load(o1); var a11 = Vector256.Load(o1 + 8);
        var a20 = Vector256.Load(o2); var a21 = Vector256.Load(o2 + 8);
        var a30 = Vector256.Load(o3); var a31 = Vector256.Load(o3 + 8);
        nint step = (nint)stride * TElement.Size;
        byte* value = v;
        for (nint t = 0; t < n; t++, value += step)
        {
            var v0 = TElement.Load256(value);
            var v1 = TElement.Load256(value + 8 * TElement.Size);
            var w = Vector256.Create(p[t]);
            a00 = Vector256.FusedMultiplyAdd(v0, w, a00);
            a01 = Vector256.FusedMultiplyAdd(v1, w, a01);
            w = Vector256.Create(p1[t]);
            a10 = Vector256.FusedMultiplyAdd(v0, w, a10);
            a11 = Vector256.FusedMultiplyAdd(v1, w, a11);
            w = Vector256.Create(p2[t]);
            a20 = Vector256.FusedMultiplyAdd(v0, w, a20);
            a21 = Vector256.FusedMultiplyAdd(v1, w, a21);
            w = Vector256.Create(p3[t]);
            a30 = Vector256.FusedMultiplyAdd(v0, w, a30);
            a31 = Vector256.FusedMultiplyAdd(v1, w, a31);
        }
        a00.Store(o); a01.Store(o + 8);
        a10.Store(o1); a11.Store(o1 + 8);
        a20.Store(o2); a21.Store(o2 + 8);
        a30.Store(o3); a31.Store(o3 + 8);
    }

    /// <summary>Four query heads × 8 dimensions.</summary>
    static void Accumulate256x1<TElement>(float* p, int pStride, byte* v, int stride, int n, float* o, int d)
        where TElement : IKvElement
    {
        var a0 = Vector256.Load(o);
        var a1 = Vector256.Load(o + d);
        var a2 = Vector256.Load(o + 2 * d);
        var a3 = Vector256.Load(o + 3 * d);
        for (int t = 0; t < n; t++)
        {
            var value = TElement.Load256(v + (long)t * stride * TElement.Size);
            a0 = Vector256.FusedMultiplyAdd(value, Vector256.Create(p[t]), a0);
            a1 = Vector256.FusedMultiplyAdd(value, Vector256.Create(p[pStride + t]), a1);
            a2 = Vector256.FusedMultiplyAdd(value, Vector256.Create(p[2 * pStride + t]), a2);
            a3 = Vector256.FusedMultiplyAdd(value, Vector256.Create(p[3 * pStride + t]), a3);
        }
        a0.Store(o);
        a1.Store(o + d);
        a2.Store(o + 2 * d);
        a3.Store(o + 3 * d);
    }
}

/// <summary>
/// How the four-head kernels read one element type of keys and values into float lanes; a struct
/// type argument, so each element type gets its own compiled kernel with the load inlined.
/// </summary>
internal unsafe interface IKvElement
{
    /// <summary>Bytes per element.</summary>
    static abstract int Size { get; }

    static abstract float Load(byte* at);

    static abstract Vector256<float> Load256(byte* at);

    static abstract Vector512<float> Load512(byte* at);
}

/// <summary>Floats, read as they are.</summary>
internal readonly unsafe struct SingleElement : IKvElement
{
    public static int Size => sizeof(float);

    public static float Load(byte* at) => *(float*)at;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Load256(byte* at) => Vector256.Load((float*)at);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Load512(byte* at) => Vector512.Load((float*)at);
}

/// <summary>
/// Halves with no infinity or NaN among them, read as floats 2^-112 times their value
/// (<see cref="QuantMath.ScaledHalfToSingle(Vector256{int})"/>); the caller folds
/// <see cref="QuantMath.HalfRebias"/> into the other factor instead (queries and weights 2^112
/// times theirs; every product is then the exact one: powers of two scale without rounding). A full
/// cache's decode step converts every key and value of the context, and the multiply shared the
/// multiply-add ports with the products themselves; a shift and a mask run beside them.
/// </summary>
internal readonly unsafe struct ScaledHalfElement : IKvElement
{
    public static int Size => sizeof(ushort);

    public static float Load(byte* at) => QuantMath.ScaledHalfToSingle(*(ushort*)at);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Load256(byte* at) => ScaledHalves.Load8((ushort*)at);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Load512(byte* at) =>
        QuantMath.ScaledHalfToSingle(Vector512.WidenLower(Vector256.Load((short*)at).ToVector512Unsafe()));
}
