using SpeCache.ModelFiles;

namespace SpeCache.Tests.ModelFiles;

public class MetadataExtensionsTests
{
    static readonly IReadOnlyDictionary<string, object> Meta = new Dictionary<string, object>
    {
        ["name"] = "tiny",
        ["u8"] = (byte)7,
        ["u32"] = 4_000_000_000u,
        ["i16"] = (short)-3,
        ["u64.big"] = ulong.MaxValue,
        ["f32"] = 0.25f,
        ["f64"] = 1e-6,
        ["flag"] = true,
        ["tokens"] = new[] { "a", "b" },
        ["scores"] = new[] { 1f, 2f },
    };

    [Fact]
    public void TypedReads()
    {
        Assert.Equal("tiny", Meta.GetString("name"));
        Assert.Equal(7, Meta.GetInt64("u8"));
        Assert.Equal(4_000_000_000, Meta.GetInt64("u32"));
        Assert.Equal(-3, Meta.GetInt64("i16"));
        Assert.Equal(0.25f, Meta.GetSingle("f32"));
        Assert.Equal(1e-6f, Meta.GetSingle("f64"));
        Assert.Equal(7f, Meta.GetSingle("u8"));
        Assert.True(Meta.GetBool("flag"));
        Assert.Equal(["a", "b"], Meta.GetArray<string>("tokens"));
        Assert.Equal([1f, 2f], Meta.GetArray<float>("scores"));
    }

    [Fact]
    public void TryReadsReportAbsence()
    {
        Assert.False(Meta.TryGetString("nope", out _));
        Assert.False(Meta.TryGetInt64("nope", out _));
        Assert.False(Meta.TryGetSingle("nope", out _));
        Assert.False(Meta.TryGetBool("nope", out _));
        Assert.False(Meta.TryGetArray<int>("nope", out _));
        Assert.True(Meta.TryGetInt64("u32", out var v) && v == 4_000_000_000);
    }

    [Fact]
    public void ErrorsNameTheKeyAndTheTypes()
    {
        Assert.Equal("metadata 'nope' is missing (expected string)", Assert.Throws<InvalidDataException>(() => Meta.GetString("nope")).Message);
        Assert.Equal("metadata 'name' has type string, expected integer", Assert.Throws<InvalidDataException>(() => Meta.GetInt64("name")).Message);
        Assert.Equal("metadata 'scores' has type f32[], expected i32[]", Assert.Throws<InvalidDataException>(() => Meta.GetArray<int>("scores")).Message);
        Assert.Contains("'flag' has type bool", Assert.Throws<InvalidDataException>(() => Meta.TryGetSingle("flag", out _)).Message);
        Assert.Contains("does not fit", Assert.Throws<InvalidDataException>(() => Meta.GetInt64("u64.big")).Message);
        Assert.Contains("'u8' has type u8, expected bool", Assert.Throws<InvalidDataException>(() => Meta.GetBool("u8")).Message);
    }
}
