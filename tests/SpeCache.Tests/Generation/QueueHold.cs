using SpeCache.Generation;

namespace SpeCache.Tests.Generation;

/// <summary>
/// Makes a cancellation test independent of the machine's speed: a tiny model decodes thousands of
/// tokens in the time a loaded test machine takes to switch threads, so a test that cancels a
/// running generation could otherwise see it finish first.
/// </summary>
public static class QueueHold
{
    /// <summary>
    /// From the queue's <paramref name="fromStep"/>-th step on, holds its loop between two steps until
    /// a running generation's caller has gone (at most 30 s, so a failing test cannot hang), once.
    /// </summary>
    public static void UntilAbandoned(GenerationQueue queue, int fromStep)
    {
        bool released = false;
        queue.BetweenSteps = () =>
        {
            if (released || queue.Steps < fromStep) return;
            SpinWait.SpinUntil(() => queue.AbandonedRunning > 0, TimeSpan.FromSeconds(30));
            released = true;
        };
    }
}
