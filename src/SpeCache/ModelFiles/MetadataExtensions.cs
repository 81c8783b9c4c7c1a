namespace SpeCache.ModelFiles;

/// <summary>
/// Typed reads of GGUF-style metadata. The convention every reader follows: strings are
/// <see cref="string"/>; integers keep their exact C# type (byte, sbyte, ushort, short, uint, int,
/// ulong, long); f32 is <see cref="float"/>, f64 <see cref="double"/>, bool <see cref="bool"/>;
/// arrays are typed arrays (string[], float[], int[], ...) and arrays of arrays are object[].
/// Get* throw when the key is missing; Try* return false when it is missing. Both throw
/// <see cref="InvalidDataException"/> naming the key when the value has the wrong type, because a
/// wrong type means a broken file, not an absent setting.
/// </summary>
public static class MetadataExtensions
{
    public static string GetString(this IReadOnlyDictionary<string, object> metadata, string key) =>
        metadata.TryGetString(key, out var value) ? value : throw Missing(key, "string");

    public static bool TryGetString(this IReadOnlyDictionary<string, object> metadata, string key, out string value)
    {
        value = "";
        if (!metadata.TryGetValue(key, out var raw)) return false;
        value = raw as string ?? throw WrongType(key, raw, "string");
        return true;
    }

    /// <summary>Any integer type, widened; a u64 above long.MaxValue is an error.</summary>
    public static long GetInt64(this IReadOnlyDictionary<string, object> metadata, string key) =>
        metadata.TryGetInt64(key, out var value) ? value : throw Missing(key, "integer");

    public static bool TryGetInt64(this IReadOnlyDictionary<string, object> metadata, string key, out long value)
    {
        value = 0;
        if (!metadata.TryGetValue(key, out var raw)) return false;
        value = raw switch
        {
            byte v => v,
            sbyte v => v,
            ushort v => v,
            short v => v,
            uint v => v,
            int v => v,
            long v => v,
            ulong v when v <= long.MaxValue => (long)v,
            ulong v => throw new InvalidDataException($"metadata '{key}': value {v} does not fit in a 64-bit signed integer"),
            _ => throw WrongType(key, raw, "integer"),
        };
        return true;
    }

    /// <summary>f32, f64 (narrowed) or any integer type.</summary>
    public static float GetSingle(this IReadOnlyDictionary<string, object> metadata, string key) =>
        metadata.TryGetSingle(key, out var value) ? value : throw Missing(key, "number");

    public static bool TryGetSingle(this IReadOnlyDictionary<string, object> metadata, string key, out float value)
    {
        value = 0;
        if (!metadata.TryGetValue(key, out var raw)) return false;
        value = raw switch
        {
            float v => v,
            double v => (float)v,
            byte or sbyte or ushort or short or uint or int or long or ulong => metadata.GetInt64(key),
            _ => throw WrongType(key, raw, "number"),
        };
        return true;
    }

    public static bool GetBool(this IReadOnlyDictionary<string, object> metadata, string key) =>
        metadata.TryGetBool(key, out var value) ? value : throw Missing(key, "bool");

    public static bool TryGetBool(this IReadOnlyDictionary<string, object> metadata, string key, out bool value)
    {
        value = false;
        if (!metadata.TryGetValue(key, out var raw)) return false;
        value = raw is bool b ? b : throw WrongType(key, raw, "bool");
        return true;
    }

    /// <summary>An array whose elements are exactly <typeparamref name="T"/> (string, float, int, ...; object for arrays of arrays).</summary>
    public static T[] GetArray<T>(this IReadOnlyDictionary<string, object> metadata, string key) =>
        metadata.TryGetArray<T>(key, out var value) ? value : throw Missing(key, TypeName(typeof(T[])));

    public static bool TryGetArray<T>(this IReadOnlyDictionary<string, object> metadata, string key, out T[] value)
    {
        value = [];
        if (!metadata.TryGetValue(key, out var raw)) return false;
        value = raw as T[] ?? throw WrongType(key, raw, TypeName(typeof(T[])));
        return true;
    }

    static InvalidDataException Missing(string key, string expected) =>
        new($"metadata '{key}' is missing (expected {expected})");

    static InvalidDataException WrongType(string key, object actual, string expected) =>
        new($"metadata '{key}' has type {TypeName(actual.GetType())}, expected {expected}");

    /// <summary>GGUF's names for the types, which is what a reader of the error knows the file by.</summary>
    public static string TypeName(Type type)
    {
        if (type.IsArray) return TypeName(type.GetElementType()!) + "[]";
        if (type == typeof(byte)) return "u8";
        if (type == typeof(sbyte)) return "i8";
        if (type == typeof(ushort)) return "u16";
        if (type == typeof(short)) return "i16";
        if (type == typeof(uint)) return "u32";
        if (type == typeof(int)) return "i32";
        if (type == typeof(ulong)) return "u64";
        if (type == typeof(long)) return "i64";
        if (type == typeof(float)) return "f32";
        if (type == typeof(double)) return "f64";
        if (type == typeof(bool)) return "bool";
        if (type == typeof(string)) return "string";
        if (type == typeof(object)) return "array";
        return type.Name;
    }
}
