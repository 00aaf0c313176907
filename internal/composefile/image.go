package composefile

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"strings"
)

// Image is what a Dockerfile's final stage gives every container of the image: environment
// variables (ENV) and anonymous volumes (VOLUME).
type Image struct {
	Env     map[string]string
	Volumes []string
}

// ReadDockerfile reads the ENV and VOLUME instructions of a Dockerfile's final stage (instructions
// of earlier stages do not reach the image). Line continuations are joined; ENV takes the
// key=value form (with optional double quotes) and the legacy "ENV key value" form; VOLUME takes
// both the JSON array and the plain form.
func ReadDockerfile(path string) (Image, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return Image{}, fmt.Errorf("read dockerfile: %w", err)
	}
	img := Image{Env: map[string]string{}}
	joined := strings.ReplaceAll(string(raw), "\\\n", " ")
	sc := bufio.NewScanner(strings.NewReader(joined))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		instr, rest, _ := strings.Cut(line, " ")
		rest = strings.TrimSpace(rest)
		switch strings.ToUpper(instr) {
		case "FROM":
			img = Image{Env: map[string]string{}}
		case "ENV":
			fields := strings.Fields(rest)
			if len(fields) > 0 && !strings.Contains(fields[0], "=") {
				img.Env[fields[0]] = strings.TrimSpace(strings.TrimPrefix(rest, fields[0]))
				continue
			}
			for _, kv := range fields {
				k, v, _ := strings.Cut(kv, "=")
				img.Env[k] = strings.Trim(v, `"`)
			}
		case "VOLUME":
			if strings.HasPrefix(rest, "[") {
				var dirs []string
				if err := json.Unmarshal([]byte(rest), &dirs); err != nil {
					return Image{}, fmt.Errorf("%s: VOLUME %s: %w", path, rest, err)
				}
				img.Volumes = append(img.Volumes, dirs...)
				continue
			}
			img.Volumes = append(img.Volumes, strings.Fields(rest)...)
		}
	}
	if err := sc.Err(); err != nil {
		return Image{}, fmt.Errorf("read %s: %w", path, err)
	}
	return img, nil
}
