package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// TestConnectVerifiesRetainedMessages: `icws connect` receives and verifies every message of a
// burst while the canister retains all of them. The demo canister certifies its queue in the
// CDK's red-black tree, so the witness of each batch grows with the retained count, two CBOR
// arrays per tree level: up to 22 nested arrays at 2,000 retained messages, up to 34 at 100,000
// (as a real canister's; more than 32 from about the 32,750th message on), which the client must
// decode.
func TestConnectVerifiesRetainedMessages(t *testing.T) {
	tests := []struct {
		messages int
		timeout  time.Duration
	}{
		{messages: 2_000, timeout: 2 * time.Minute},
		{messages: 100_000, timeout: 15 * time.Minute},
	}
	for _, tt := range tests {
		t.Run(strconv.Itoa(tt.messages), func(t *testing.T) {
			connectReceivesBurst(t, tt.messages, tt.timeout)
		})
	}
}

// connectLine is one message as `icws connect` prints it.
type connectLine struct {
	Seq  uint64 `json:"seq"`
	Text string `json:"text"`
}

func connectReceivesBurst(t *testing.T, n int, timeout time.Duration) {
	dev := startDev(t, ReplicaOptions{Env: map[string]string{
		"ICWS_REPLICA_MAX_BURST": strconv.Itoa(n),
	}})

	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.Command(icwsBinary(t), "connect", "-gateway", dev.GatewayURL, "-ic", dev.URL, "-canister", dev.CanisterID)
	cmd.Env = cleanEnv(t.TempDir(), map[string]string{"ICWS_LOG_LEVEL": "info"})
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr := &syncBuffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start icws connect: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stopReading := make(chan struct{})
	t.Cleanup(func() {
		close(stopReading)
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
		if t.Failed() {
			t.Logf("----- icws connect stderr (tail) -----\n%s", tail(stderr.Bytes(), dumpTailBytes))
		}
	})

	lines := make(chan connectLine, 1024)
	readErr := make(chan error, 1)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var l connectLine
			if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
				readErr <- fmt.Errorf("stdout line %q: %w", sc.Text(), err)
				return
			}
			select {
			case lines <- l:
			case <-stopReading:
				return
			}
		}
		readErr <- sc.Err()
	}()

	start := time.Now()
	if _, err := io.WriteString(stdin, "burst:"+strconv.Itoa(n)+"\n"); err != nil {
		t.Fatalf("write to icws connect: %v", err)
	}
	var lastSeq uint64
	for i := 1; i <= n; i++ {
		var l connectLine
		var ok bool
		select {
		case l, ok = <-lines:
		case <-ctx.Done():
			t.Fatalf("received %d of %d messages in %s", i-1, n, timeout)
		}
		if !ok {
			err := <-readErr
			t.Fatalf("icws connect stopped after %d of %d messages (read: %v, exit: %v)", i-1, n, err, waitExit(exited))
		}
		if want := "burst:" + strconv.Itoa(i); l.Text != want {
			t.Fatalf("message %d is %q, want %q", i, l.Text, want)
		}
		if l.Seq <= lastSeq {
			t.Fatalf("message %d has sequence number %d after %d", i, l.Seq, lastSeq)
		}
		lastSeq = l.Seq
	}
	el := time.Since(start)
	t.Logf("icws connect received and verified %d retained messages in %s (%.0f msg/s)", n, el.Round(time.Millisecond), float64(n)/el.Seconds())

	// EOF on stdin: connect closes the session and exits cleanly.
	if err := stdin.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		exited <- err
		if err != nil {
			t.Fatalf("icws connect exited with %v", err)
		}
	case <-ctx.Done():
		t.Fatal("icws connect did not exit after EOF on stdin")
	}
}

// waitExit returns the exit status if the process ends within a few seconds.
func waitExit(exited chan error) error {
	select {
	case err := <-exited:
		exited <- err
		return err
	case <-time.After(5 * time.Second):
		return errors.New("still running")
	}
}
