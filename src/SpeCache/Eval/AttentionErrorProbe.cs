using System.Numerics.Tensors;
using SpeCache.KvCache;
using SpeCache.Transformer;

namespace SpeCache.Eval;

/// <summary>
/// A KV cache that runs a policy's cache beside a reference cache on the very same Append and
/// Attend calls and measures, per layer, how far the policy's attention output is from the
/// reference's: ||out(policy) − out(reference)|| / ||out(reference)|| per token row.
/// </summary>
/// <remarks>
/// The forward pass goes on with the reference's output, so every layer of every token sees the
/// reference model's hidden states: a layer's error is that policy's approximation of that layer on
/// exact inputs, never an error inherited from earlier layers or earlier tokens. The model code
/// knows nothing of this; it is just another <see cref="IKvCache"/>.
/// Speculative rows (specache's extra decode row) exist only in the policy, which decides what they
/// are for: the reference stores and attends the real rows, and the speculative rows' outputs are
/// the policy's own. Only real rows are measured.
/// </remarks>
public sealed class AttentionErrorProbe : IKvCache
{
    readonly IKvCache _reference, _policy;
    readonly int _kvDim, _qDim;
    readonly double[] _sum, _max;
    readonly long[] _rows;
    float[] _policyOutput = [];
    int _speculative;

    /// <summary>Takes ownership of both caches; they must have the same capacity.</summary>
    public AttentionErrorProbe(IKvCache reference, IKvCache policy, ModelConfig config)
    {
        if (reference.Length != 0 || policy.Length != 0) throw new ArgumentException("the probe needs two empty caches");
        _reference = reference;
        _policy = policy;
        _kvDim = config.KvDim;
        _qDim = config.QDim;
        _sum = new double[config.LayerCount];
        _max = new double[config.LayerCount];
        _rows = new long[config.LayerCount];
    }

    /// <summary>Whether Attend calls count toward the error figures (off during a prefill that is not to be measured).</summary>
    public bool Measuring { get; set; }

    /// <summary>Mean relative error of the measured rows, per layer (0 where no row was measured).</summary>
    public double[] MeanErrorPerLayer() => [.. _sum.Select((s, l) => _rows[l] == 0 ? 0 : s / _rows[l])];

    /// <summary>Largest relative error of one measured row, per layer.</summary>
    public double[] MaxErrorPerLayer() => [.. _max];

    public int Length => _policy.Length;
    public int Capacity => Math.Min(_reference.Capacity, _policy.Capacity);
    public int SpeculativeRows => _policy.SpeculativeRows;
    public KvMemory Memory => _policy.Memory;
    public KvCounters? Counters => _policy.Counters;

    public void BeginStep(int count, int speculative)
    {
        _policy.BeginStep(count, speculative);
        _reference.BeginStep(count - speculative, 0);
        _speculative = speculative;
    }

    public void Append(int layer, ReadOnlySpan<float> keys, ReadOnlySpan<float> values, int count)
    {
        _policy.Append(layer, keys, values, count);
        int real = count - _speculative;
        if (real > 0) _reference.Append(layer, keys[..(real * _kvDim)], values[..(real * _kvDim)], real);
    }

    public void Attend(int layer, ReadOnlySpan<float> queries, Span<float> output, int count)
    {
        int n = count * _qDim, real = count - _speculative;
        if (_policyOutput.Length < n) _policyOutput = new float[n];
        var policyOutput = _policyOutput.AsSpan(0, n);
        _policy.Attend(layer, queries, policyOutput, count);
        if (real > 0) _reference.Attend(layer, queries[..(real * _qDim)], output[..(real * _qDim)], real);
        policyOutput[(real * _qDim)..].CopyTo(output[(real * _qDim)..n]);
        if (!Measuring) return;
        for (int i = 0; i < real; i++)
        {
            var exact = output.Slice(i * _qDim, _qDim);
            double norm = TensorPrimitives.Norm<float>(exact);
            // A zero reference row (nothing to attend to) has no relative error to speak of.
            if (norm == 0) continue;
            double error = TensorPrimitives.Distance<float>(policyOutput.Slice(i * _qDim, _qDim), exact) / norm;
            _sum[layer] += error;
            _max[layer] = Math.Max(_max[layer], error);
            _rows[layer]++;
        }
    }

    public void Commit(int count)
    {
        _policy.Commit(count);
        _reference.Commit(count);
        _speculative = 0;
    }

    public void Clear()
    {
        _policy.Clear();
        _reference.Clear();
    }

    public void Dispose()
    {
        _policy.Dispose();
        _reference.Dispose();
    }
}
