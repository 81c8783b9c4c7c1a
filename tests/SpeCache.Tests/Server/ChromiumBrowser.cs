using Microsoft.Playwright;

namespace SpeCache.Tests.Server;

/// <summary>
/// Debian's Chromium, headless, driven through Playwright: one browser per test class, a fresh
/// page per test. Playwright's own browser download is never used; tests/setup-browser.sh installs
/// the system package (test.sh runs it). A missing browser fails every test that needs it, loudly.
/// </summary>
public sealed class ChromiumBrowser : IAsyncLifetime
{
    public const string ExecutablePath = "/usr/bin/chromium";

    IPlaywright? _playwright;
    IBrowser? _browser;

    public IBrowser Browser => _browser ?? throw new InvalidOperationException("The browser has not been launched.");

    public async ValueTask InitializeAsync()
    {
        if (!File.Exists(ExecutablePath))
            throw new InvalidOperationException(
                $"The web chat page tests drive Debian's Chromium at {ExecutablePath}, which is not installed. " +
                "Install it with `bash tests/setup-browser.sh` (as root; it runs apt-get install chromium), as test.sh does.");
        _playwright = await Playwright.CreateAsync();
        _browser = await _playwright.Chromium.LaunchAsync(new BrowserTypeLaunchOptions
        {
            ExecutablePath = ExecutablePath,
            Headless = true,
            // CI runs as root, where Chromium refuses to start inside its sandbox.
            Args = ["--no-sandbox"],
        });
    }

    /// <summary>
    /// A new page at <paramref name="address"/>, collecting the script errors and Content-Security-Policy
    /// violations it reports into <paramref name="problems"/> (the page must have none).
    /// </summary>
    public async Task<IPage> OpenAsync(Uri address, List<string> problems)
    {
        var page = await Browser.NewPageAsync(new BrowserNewPageOptions { ViewportSize = new ViewportSize { Width = 1200, Height = 800 } });
        page.PageError += (_, error) => problems.Add($"script error: {error}");
        page.Console += (_, message) =>
        {
            if (message.Text.Contains("Content Security Policy", StringComparison.Ordinal)) problems.Add($"CSP: {message.Text}");
        };
        var response = await page.GotoAsync(address.ToString());
        Assert.NotNull(response);
        Assert.Equal(200, response.Status);
        return page;
    }

    public async ValueTask DisposeAsync()
    {
        if (_browser != null) await _browser.DisposeAsync();
        _playwright?.Dispose();
    }
}
