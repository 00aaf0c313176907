//go:build linux

package main

import (
	"context"
	"fmt"
	"log/slog"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Versions of the NATS ceiling: the nats-server icws embeds and the natscli whose bench measures it.
const (
	natsServerPackage = "github.com/nats-io/nats-server/v2@v2.15.2"
	natsCLIPackage    = "github.com/nats-io/natscli/nats@v0.5.0"
)

// natsResult is one `nats bench` run and the server's CPU during it.
type natsResult struct {
	command          string
	perSecond        float64
	serverMicrosPer  float64
	messages         int
	serverCPUSeconds float64
}

type natsResults struct{ publish, consume natsResult }

func runNatsPeer(ctx context.Context, logger *slog.Logger, cfg config, tmp string) (natsResults, error) {
	var res natsResults
	for _, pkg := range []string{natsServerPackage, natsCLIPackage} {
		if err := goInstall(ctx, logger, tmp, pkg); err != nil {
			return res, err
		}
	}
	addr, err := freeAddr()
	if err != nil {
		return res, err
	}
	host, port, _ := strings.Cut(addr, ":")
	server, err := startProc(tmp, "nats-server", filepath.Join(tmp, "nats-server"), nil,
		"-a", host, "-p", port, "-js", "-sd", filepath.Join(tmp, "nats-store"))
	if err != nil {
		return res, err
	}
	defer server.stop()
	url := "nats://" + addr
	if err := waitNats(ctx, tmp, url, server); err != nil {
		return res, err
	}
	statsRe := regexp.MustCompile(`stats: ([0-9,]+) msgs/sec`)
	common := []string{"--msgs=" + strconv.Itoa(cfg.natsMessages), "--size=" + strconv.Itoa(cfg.payload), "--no-progress"}
	run := func(args ...string) (natsResult, error) {
		r := natsResult{messages: cfg.natsMessages, command: "nats bench " + strings.Join(args, " ")}
		before, err := sample(server.pid())
		if err != nil {
			return r, err
		}
		cmd := exec.CommandContext(ctx, filepath.Join(tmp, "nats"), append([]string{"-s", url, "bench"}, args...)...)
		cmd.Env = cleanEnv(nil)
		out, err := cmd.CombinedOutput()
		if err != nil {
			return r, fmt.Errorf("%s: %w\n%s", r.command, err, out)
		}
		after, err := sample(server.pid())
		if err != nil {
			return r, err
		}
		m := statsRe.FindSubmatch(out)
		if m == nil {
			return r, fmt.Errorf("%s: no msgs/sec in its output:\n%s", r.command, out)
		}
		r.perSecond, _ = strconv.ParseFloat(strings.ReplaceAll(string(m[1]), ",", ""), 64)
		r.serverCPUSeconds = after.cpu - before.cpu
		r.serverMicrosPer = r.serverCPUSeconds / float64(cfg.natsMessages) * 1e6
		return r, nil
	}
	logger.Info("nats bench: JetStream publish")
	if res.publish, err = run(append([]string{"js", "pub", "async", "benchsubj", "--create", "--storage=file", "--purge"}, common...)...); err != nil {
		return res, err
	}
	logger.Info("nats bench: JetStream consume")
	if res.consume, err = run(append([]string{"js", "consume"}, common...)...); err != nil {
		return res, err
	}
	return res, nil
}

// waitNats waits until `nats account info` answers, which needs JetStream to be up.
func waitNats(ctx context.Context, tmp, url string, server *proc) error {
	deadline := time.Now().Add(time.Minute)
	for {
		cmd := exec.CommandContext(ctx, filepath.Join(tmp, "nats"), "-s", url, "account", "info")
		cmd.Env = cleanEnv(nil)
		if err := cmd.Run(); err == nil {
			return nil
		}
		select {
		case <-server.done:
			return fmt.Errorf("nats-server exited: %v\n%s", server.err, server.tail())
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("nats-server not ready after a minute\n%s", server.tail())
		}
	}
}
