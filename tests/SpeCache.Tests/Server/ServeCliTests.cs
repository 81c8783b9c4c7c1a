using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using SpeCache.Tests.Cli;

namespace SpeCache.Tests.Server;

/// <summary><c>specache serve</c> as a real process: the command line reaches the server.</summary>
public sealed class ServeCliTests
{
    [Fact]
    public async Task ServeAnswersLikeGenerateAndHonoursItsOptions()
    {
        string template = Path.Combine(TestPaths.Scratch("serve"), "chatml.jinja");
        File.WriteAllText(template, TestServer.ChatMlTemplate);
        using var process = CliRunner.Start("serve", "--port", "0", "--api-key", "k-1", "--chat-template", template, "--temperature", "0", "--threads", "1");
        try
        {
            // The server says where it listens on stderr once it is up.
            Uri? address = null;
            var startup = new StringBuilder();
            while (address == null && await process.StandardError.ReadLineAsync(TestContext.Current.CancellationToken) is { } line)
            {
                startup.AppendLine(line);
                var match = Regex.Match(line, @"at (http://\S+) ");
                if (match.Success) address = new Uri(match.Groups[1].Value);
            }
            Assert.True(address != null, $"no address in:\n{startup}");
            using var http = new HttpClient { BaseAddress = address };
            http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", "k-1");

            // --temperature 0 is the default for requests: the same text as `specache generate --temperature 0`.
            var generate = CliRunner.Run("generate", "--temperature", "0", "-p", "Once upon a time", "-n", "24", "--threads", "1");
            Assert.Equal(0, generate.ExitCode);
            using var completion = await http.PostAsync("/v1/completions",
                new StringContent("""{"model":"stories260K.bin","prompt":"Once upon a time","max_tokens":24}""", Encoding.UTF8, "application/json"),
                TestContext.Current.CancellationToken);
            Assert.Equal(HttpStatusCode.OK, completion.StatusCode);
            var body = JsonDocument.Parse(await completion.Content.ReadAsStringAsync(TestContext.Current.CancellationToken)).RootElement;
            Assert.Equal(generate.StdOut.TrimEnd('\n'), body.GetProperty("choices")[0].GetProperty("text").GetString());

            // --chat-template makes chat work for a model that has none.
            using var chat = await http.PostAsync("/v1/chat/completions",
                new StringContent("""{"messages":[{"role":"user","content":"hi"}],"max_tokens":4}""", Encoding.UTF8, "application/json"),
                TestContext.Current.CancellationToken);
            Assert.Equal(HttpStatusCode.OK, chat.StatusCode);

            // --api-key is enforced.
            using var anonymous = new HttpClient { BaseAddress = address };
            using var refused = await anonymous.GetAsync("/v1/models", TestContext.Current.CancellationToken);
            Assert.Equal(HttpStatusCode.Unauthorized, refused.StatusCode);
        }
        finally
        {
            process.Kill(entireProcessTree: true);
            await process.WaitForExitAsync(TestContext.Current.CancellationToken);
        }
    }

    [Fact]
    public void AMissingTemplateFileIsOneLine()
    {
        var result = CliRunner.Run("serve", "--chat-template", Path.Combine(TestPaths.Scratch("serve"), "no-such-template.jinja"));
        CliRunner.AssertOneLineError(result, "no-such-template.jinja");
    }
}
