package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/icws/icws/internal/testkit"
)

// demoPageState is what the demo page shows (demo/web/index.html), read from its DOM.
type demoPageState struct {
	Status   string `json:"status"`
	Received int    `json:"received"`
	Expected int    `json:"expected"`
	Order    string `json:"order"`
	Resumes  int    `json:"resumes"`
	Resent   int    `json:"resent"`
	LastSeq  int    `json:"lastSeq"`
	Chat     string `json:"chat"`
	Events   string `json:"events"`
}

const demoPageStateJS = `(() => {
  const t = (id) => document.getElementById(id).textContent;
  return {
    status: document.getElementById("status").dataset.status,
    received: Number(t("received")), expected: Number(t("expected")), order: t("order"),
    resumes: Number(t("resumes")), resent: Number(t("resent")), lastSeq: Number(t("last-seq")),
    chat: [...document.querySelectorAll("#chat li")].map((li) => li.className + ": " + li.textContent).join("\n"),
    events: [...document.querySelectorAll("#events li")].map((li) => li.textContent).join("\n"),
  };
})()`

// chromiumPath finds Debian's chromium (ICWS_CHROMIUM overrides); "" when it is not installed.
func chromiumPath() string {
	if p := os.Getenv("ICWS_CHROMIUM"); p != "" {
		return p
	}
	p, err := exec.LookPath("chromium")
	if err != nil {
		return ""
	}
	return p
}

// TestDemoPageInChromium opens the demo page of `icws dev` in headless Chromium and uses it as a
// person would: the page opens a session, a text comes back as an echo, a burst arrives, and a
// dropped connection is resumed with the message count exact and in order. With
// ICWS_DEMO_SCREENSHOT=<file.png> it saves a screenshot of the page in that final state. It skips
// when chromium is not installed, unless ICWS_BROWSER_TEST_REQUIRED is set (as in .ci/run).
func TestDemoPageInChromium(t *testing.T) {
	chromium := chromiumPath()
	if chromium == "" {
		if os.Getenv("ICWS_BROWSER_TEST_REQUIRED") != "" {
			t.Fatal("chromium is not installed, and ICWS_BROWSER_TEST_REQUIRED is set (.ci/run installs it)")
		}
		t.Skip("chromium is not installed (apt-get install chromium; .ci/run installs it): the demo page browser test needs it")
	}
	dev := startDev(t, ReplicaOptions{})

	// Flags keep Chromium off the network (it would try Google's services and be refused) and
	// make it run as root in a container; a fresh profile per run.
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromium),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1100, 820),
	}
	for _, f := range []string{"headless", "no-sandbox", "disable-gpu", "disable-quic", "no-first-run",
		"disable-background-networking", "disable-component-update", "disable-sync", "no-default-browser-check",
		"disable-default-apps", "disable-extensions", "disable-dev-shm-usage", "mute-audio", "hide-scrollbars"} {
		opts = append(opts, chromedp.Flag(f, true))
	}
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancelAlloc)
	var consoleMu sync.Mutex
	var console []string
	logf := func(format string, args ...any) {
		consoleMu.Lock()
		defer consoleMu.Unlock()
		console = append(console, fmt.Sprintf(format, args...))
	}
	ctx, cancel := chromedp.NewContext(allocCtx, chromedp.WithErrorf(logf))
	t.Cleanup(cancel)
	err := chromedp.Listen(ctx, func(ev any) {
		switch ev := ev.(type) {
		case *runtime.EventConsoleAPICalled:
			var parts []string
			for _, a := range ev.Args {
				if len(a.Value) > 0 {
					parts = append(parts, string(a.Value))
				} else {
					parts = append(parts, a.Description)
				}
			}
			logf("console.%s: %s", ev.Type, strings.Join(parts, " "))
		case *runtime.EventExceptionThrown:
			logf("exception: %s", (&chromedp.ExceptionError{ExceptionDetails: ev.ExceptionDetails}).Error())
		}
	})
	if err != nil {
		t.Fatalf("start chromium (%s): %v", chromium, err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			consoleMu.Lock()
			defer consoleMu.Unlock()
			t.Logf("browser console:\n%s", strings.Join(console, "\n"))
		}
	})

	start := time.Now()
	if err := chromedp.Do(ctx, chromedp.Navigate(dev.DemoURL)); err != nil {
		t.Fatalf("open %s in chromium: %v", dev.DemoURL, err)
	}
	run := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(ctx, steps...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	// wait polls the page's state until cond accepts it (the page updates as messages arrive).
	wait := func(what string, timeout time.Duration, cond func(demoPageState) error) demoPageState {
		t.Helper()
		var s demoPageState
		testkit.WaitForNil(t, timeout, 100*time.Millisecond, what, func() error {
			if exited, err := dev.Proc.Exited(); exited {
				t.Fatalf("icws dev exited: %v", err)
			}
			var err error
			if s, err = chromedp.Run(ctx, chromedp.Evaluate[demoPageState](demoPageStateJS)); err != nil {
				return err
			}
			if err := cond(s); err != nil {
				if s.Status == "closed" {
					t.Fatalf("waiting for %s: the page's session closed: %v\npage events:\n%s", what, err, s.Events)
				}
				return fmt.Errorf("%w\npage events:\n%s", err, s.Events)
			}
			return nil
		})
		return s
	}
	counted := func(status string, n int) func(demoPageState) error {
		return func(s demoPageState) error {
			if s.Status != status || s.Received != n || s.Expected != n || s.Order != "in order" {
				return fmt.Errorf("page shows %s, %d of %d received (%s); want %s, %d of %d", s.Status, s.Received, s.Expected, s.Order, status, n, n)
			}
			return nil
		}
	}

	wait("the page's session to open", 60*time.Second, counted("open", 0))
	t.Logf("session open %s after the page was loaded", time.Since(start).Round(time.Millisecond))

	run("send a text", chromedp.SendKeys(chromedp.ID("text"), "hello from chromium"), chromedp.Click(chromedp.ID("send")))
	s := wait("the echo", 60*time.Second, counted("open", 1))
	if !strings.Contains(s.Chat, "canister: hello from chromium") {
		t.Fatalf("the echo is not in the chat:\n%s", s.Chat)
	}

	run("ask for burst:20", chromedp.SetValue(chromedp.ID("burst-n"), "20"), chromedp.Click(chromedp.ID("burst")))
	wait("burst:20", 90*time.Second, counted("open", 21))

	// The drop comes right after the burst request: the request may still be on its way (then it is
	// re-sent on resume) and the canister's 40 messages are delivered across the drop (replayed on
	// resume); a text typed while the page resumes is queued and sent after the resume.
	run("ask for burst:40, drop the connection, send a text", chromedp.SetValue(chromedp.ID("burst-n"), "40"),
		chromedp.Click(chromedp.ID("burst")), chromedp.Click(chromedp.ID("drop")),
		chromedp.SendKeys(chromedp.ID("text"), "sent across the drop"), chromedp.Click(chromedp.ID("send")))
	s = wait("the resume, burst:40 and the echo", 120*time.Second, func(s demoPageState) error {
		if s.Resumes != 1 {
			return fmt.Errorf("page shows %d resumes (status %s), want 1", s.Resumes, s.Status)
		}
		return counted("open", 62)(s)
	})
	if !strings.Contains(s.Events, "connection dropped") || !strings.Contains(s.Events, "resumed:") {
		t.Fatalf("the page's events do not show the drop and the resume:\n%s", s.Events)
	}

	run("send after the resume", chromedp.SendKeys(chromedp.ID("text"), "still here"), chromedp.Click(chromedp.ID("send")))
	s = wait("the echo after the resume", 60*time.Second, counted("open", 63))
	t.Logf("demo page: %d of %d messages, %s, %d resume(s), %d re-sent, last canister seq %d; %s after load",
		s.Received, s.Expected, s.Order, s.Resumes, s.Resent, s.LastSeq, time.Since(start).Round(time.Millisecond))

	// The gateway saw it as a resume of the same session, not as a new one.
	if n, err := faultMetric(dev.AdminURL, "icws_edge_resumes_total", `{result="ok"}`); err != nil || n != 1 {
		t.Errorf("icws_edge_resumes_total{result=\"ok\"} = %v (%v), want 1", n, err)
	}

	if path := os.Getenv("ICWS_DEMO_SCREENSHOT"); path != "" {
		png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
		if err != nil {
			t.Fatalf("screenshot: %v", err)
		}
		if err := os.WriteFile(path, png, 0o644); err != nil {
			t.Fatalf("write screenshot: %v", err)
		}
		t.Logf("screenshot: %s (%d bytes)", path, len(png))
	}
}
