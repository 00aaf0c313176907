// Command icws is the icws gateway: one binary, one subcommand per role or tool.
//
// Adding a subcommand: write one file with a func returning a command, and add one line to
// commands() below.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"

	"github.com/icws/icws/internal/config"
)

// commands is the dispatch table, in the order help lists them.
func commands() []command {
	return []command{
		allCommand(),
		devCommand(),
		edgeCommand(),
		submitterCommand(),
		pollerCommand(),
		replicaCommand(),
		identityCommand(),
		envCommand(),
		versionCommand(),
		connectCommand(),
		benchCommand(),
		helpCommand(),
	}
}

// defaultCommand runs when icws is started without arguments (if it is registered).
const defaultCommand = "all"

// command is one subcommand.
type command struct {
	name    string
	summary string
	// usage names the arguments the command takes ("[check <command>]"); empty for none, and
	// then any argument is refused.
	usage string
	// spec returns a new configuration struct (pointer) whose envconfig tags name the variables the
	// command reads; nil for commands without configuration.
	spec func() any
	run  func(ctx context.Context, a *app, args []string) error
}

// app is what every command gets from main.
type app struct {
	stdout, stderr io.Writer
	commands       []command
}

// Exit statuses.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2 // unknown command or bad configuration
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	a := &app{stdout: stdout, stderr: stderr, commands: commands()}
	name := defaultCommand
	if len(args) > 0 {
		name, args = args[0], args[1:]
	}
	if isHelpFlag(name) {
		name = "help"
	}
	cmd, ok := a.find(name)
	if !ok {
		if len(args) == 0 && name == defaultCommand {
			a.usage(stderr)
			return exitUsage
		}
		fmt.Fprintf(stderr, "icws: unknown command %q\n\n", name)
		a.usage(stderr)
		return exitUsage
	}
	if slices.ContainsFunc(args, isHelpFlag) {
		a.commandHelp(stdout, cmd)
		return exitOK
	}
	if cmd.usage == "" && len(args) > 0 {
		fmt.Fprintf(stderr, "icws %s: takes no arguments (configuration is read from ICWS_* variables; `icws help %s` lists them), not %q\n", name, name, strings.Join(args, " "))
		return exitUsage
	}
	// SIGINT/SIGTERM cancel the context; every command shuts down within its own bound.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := cmd.run(ctx, a, args)
	var ce *config.Error
	switch {
	case err == nil:
		return exitOK
	case ctx.Err() != nil && errors.Is(err, context.Canceled):
		return exitOK // stopped by a signal before it was up: a clean stop all the same
	case errors.As(err, &ce):
		fmt.Fprintf(stderr, "icws %s: %v\n", name, err)
		return exitUsage
	default:
		fmt.Fprintf(stderr, "icws %s: %v\n", name, err)
		return exitFailure
	}
}

func isHelpFlag(arg string) bool { return arg == "-h" || arg == "-help" || arg == "--help" }

func (a *app) find(name string) (command, bool) {
	for _, c := range a.commands {
		if c.name == name {
			return c, true
		}
	}
	return command{}, false
}

// configured builds a command whose configuration C is read from the environment and validated
// before run starts; C may embed config.Log (then run gets a logger built from it) and may
// implement config.Validator on its pointer.
func configured[C any](name, summary string, run func(ctx context.Context, a *app, cfg *C, logger *slog.Logger, args []string) error) command {
	return command{
		name:    name,
		summary: summary,
		spec:    func() any { return new(C) },
		run: func(ctx context.Context, a *app, args []string) error {
			cfg := new(C)
			if err := config.Load(cfg); err != nil {
				return err
			}
			logger := slog.New(slog.NewTextHandler(a.stderr, nil))
			if l, ok := any(cfg).(interface{ LogSettings() *config.Log }); ok {
				logger = l.LogSettings().Logger(a.stderr)
			}
			if r, ok := any(cfg).(interface{ RuntimeSettings() *config.Runtime }); ok {
				r.RuntimeSettings().Apply(os.Getenv)
			}
			return run(ctx, a, cfg, logger, args)
		},
	}
}
