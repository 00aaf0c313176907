package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/icws/icws/internal/config"
)

func helpCommand() command {
	return command{
		name:    "help",
		summary: "show the commands, or one command with its configuration variables",
		usage:   "[<command>]",
		run: func(_ context.Context, a *app, args []string) error {
			switch len(args) {
			case 0:
				a.usage(a.stdout)
				return nil
			case 1:
				c, ok := a.find(args[0])
				if !ok {
					return &config.Error{Err: fmt.Errorf("unknown command %q", args[0])}
				}
				a.commandHelp(a.stdout, c)
				return nil
			}
			return &config.Error{Err: fmt.Errorf("usage: icws help [<command>], not %q", strings.Join(args, " "))}
		},
	}
}

// commandHelp describes one command: its arguments, what it does and the variables it reads.
func (a *app) commandHelp(w io.Writer, c command) {
	fmt.Fprintf(w, "usage: icws %s %s\n\n%s\n", c.name, c.usage, c.summary)
	if c.spec == nil {
		return
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "configuration (environment variables, default in brackets):")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, v := range config.Vars(c.spec()) {
		def := ""
		if v.Default != "" {
			def = " [" + v.Default + "]"
		}
		fmt.Fprintf(tw, "  %s%s\t%s\n", v.Name, def, v.Desc)
	}
	tw.Flush()
}

func (a *app) usage(w io.Writer) {
	fmt.Fprintln(w, "icws: WebSocket gateway for Internet Computer canisters")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "usage: icws <command> [arguments]   (icws help <command> for one)")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "commands:")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, c := range a.commands {
		fmt.Fprintf(tw, "  %s\t%s\n", c.name, c.summary)
	}
	tw.Flush()
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Configuration is read from ICWS_* environment variables; `icws env` lists them.")
}
