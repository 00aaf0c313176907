package composefile

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
)

// Icws is what an icws binary says about itself: its commands (`icws help`) and its
// configuration variables (`icws env`).
type Icws struct {
	Binary   string
	Commands map[string]bool
	Vars     map[string]Var
}

// Var is one configuration variable of the `icws env` table.
type Var struct {
	Default string   // "" for "(empty)"
	UsedBy  []string // the commands that read it
}

// DescribeIcws asks the icws binary for its commands and variables.
func DescribeIcws(ctx context.Context, binary string) (*Icws, error) {
	x := &Icws{Binary: binary, Commands: map[string]bool{}, Vars: map[string]Var{}}
	help, err := x.output(ctx, "help")
	if err != nil {
		return nil, err
	}
	inCommands := false
	for line := range strings.Lines(help) {
		switch {
		case strings.HasPrefix(line, "commands:"):
			inCommands = true
		case inCommands && strings.HasPrefix(line, "  "):
			x.Commands[strings.Fields(line)[0]] = true
		case inCommands:
			inCommands = false
		}
	}
	table, err := x.output(ctx, "env")
	if err != nil {
		return nil, err
	}
	row := regexp.MustCompile("^\\| `(ICWS_[A-Z0-9_]+)` \\| ([^|]*) \\| ([^|]*) \\|")
	for line := range strings.Lines(table) {
		m := row.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		def := strings.TrimSpace(m[2])
		if def == "(empty)" {
			def = ""
		}
		x.Vars[m[1]] = Var{Default: strings.Trim(def, "`"), UsedBy: strings.Split(strings.TrimSpace(m[3]), ", ")}
	}
	if len(x.Commands) < 5 || len(x.Vars) < 20 {
		return nil, fmt.Errorf("icws help and icws env listed %d commands and %d variables:\n%s\n%s", len(x.Commands), len(x.Vars), help, table)
	}
	return x, nil
}

// Reads reports whether `icws <command>` reads the variable.
func (x *Icws) Reads(command, variable string) bool {
	return slices.Contains(x.Vars[variable].UsedBy, command)
}

// Value is a variable's value in env, or its default when env does not set it.
func (x *Icws) Value(env map[string]string, variable string) string {
	if v, ok := env[variable]; ok {
		return v
	}
	return x.Vars[variable].Default
}

// output runs icws with args in an environment holding nothing but PATH, so that the answers are
// the binary's own.
func (x *Icws) output(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, x.Binary, args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("icws %s: %w\n%s", strings.Join(args, " "), err, out.String())
	}
	return out.String(), nil
}
