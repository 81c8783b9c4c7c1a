namespace SpeCache.LlamaCpp;

/// <summary>A llama.cpp call failed or the peer is not installed; the message carries llama.cpp's recent log.</summary>
public sealed class LlamaCppException(string message) : Exception(message);
