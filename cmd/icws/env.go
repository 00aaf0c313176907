package main

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/icws/icws/internal/config"
)

func envCommand() command {
	return command{
		name:    "env",
		usage:   "[check <command>]",
		summary: "list every configuration variable with its default and meaning; `env check <command>` validates that command's configuration",
		run: func(_ context.Context, a *app, args []string) error {
			switch {
			case len(args) == 0:
				return writeEnvTable(a.stdout, a.commands)
			case len(args) == 2 && args[0] == "check":
				return checkEnv(a, args[1])
			}
			return &config.Error{Err: fmt.Errorf("usage: icws env [check <command>], not %q", strings.Join(args, " "))}
		},
	}
}

// checkEnv loads and validates a command's configuration from the environment as the command
// would at start, without running it (for deployment checks).
func checkEnv(a *app, name string) error {
	c, ok := a.find(name)
	if !ok {
		return &config.Error{Err: fmt.Errorf("unknown command %q", name)}
	}
	if c.spec == nil {
		return &config.Error{Err: fmt.Errorf("command %q has no configuration", name)}
	}
	if err := config.Load(c.spec()); err != nil {
		return err
	}
	_, err := fmt.Fprintf(a.stdout, "icws %s: configuration ok\n", name)
	return err
}

// writeEnvTable prints a Markdown table of every variable any command reads; the README carries
// the same text.
func writeEnvTable(w io.Writer, cmds []command) error {
	type row struct {
		v    config.Var
		used []string
	}
	var rows []*row
	byName := map[string]*row{}
	for _, c := range cmds {
		if c.spec == nil {
			continue
		}
		for _, v := range config.Vars(c.spec()) {
			r, ok := byName[v.Name]
			if !ok {
				r = &row{v: v}
				byName[v.Name] = r
				rows = append(rows, r)
			}
			if len(r.used) == 0 || r.used[len(r.used)-1] != c.name {
				r.used = append(r.used, c.name)
			}
		}
	}
	var b strings.Builder
	b.WriteString("| variable | default | used by | meaning |\n")
	b.WriteString("|---|---|---|---|\n")
	for _, r := range rows {
		def := "(empty)"
		if r.v.Default != "" {
			def = "`" + r.v.Default + "`"
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s | %s |\n", r.v.Name, def, strings.Join(r.used, ", "), strings.ReplaceAll(r.v.Desc, "|", `\|`))
	}
	_, err := io.WriteString(w, b.String())
	return err
}
