package composefile

import (
	"cmp"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"github.com/compose-spec/compose-go/v2/types"
)

// Containers stands in, on the host, for the files the containers of a project see: each
// service gets a directory tree (its root) holding, at each mount point, a symbolic link to what
// is mounted there: a bind mount's source, a directory shared by every service that mounts the
// same named volume, a fresh directory for an anonymous volume or tmpfs, a file holding a secret's
// or config's value. Nothing else of the image is there, so a path a service uses that nothing
// mounts has no stand-in.
type Containers struct {
	Project *types.Project
	Dir     string // where the roots and the volume stand-ins are created
}

// Container is one service's stand-in tree.
type Container struct {
	Service string
	Root    string
	targets []string // mount points, clean absolute container paths
}

// New builds the stand-in tree of a service; image gives the anonymous volumes its image declares.
func (c Containers) New(service string, image Image) (*Container, error) {
	s, ok := c.Project.Services[service]
	if !ok {
		return nil, fmt.Errorf("no service %s", service)
	}
	if err := os.MkdirAll(c.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("stand-ins for %s: %w", service, err)
	}
	root, err := os.MkdirTemp(c.Dir, "root-"+service+"-")
	if err != nil {
		return nil, fmt.Errorf("stand-ins for %s: %w", service, err)
	}
	ct := &Container{Service: service, Root: root}

	type mount struct {
		target string
		source string // what the link points at
		dir    bool   // create source as a directory if it does not exist
		data   *string
	}
	var mounts []mount
	fresh := func(kind string) (string, error) {
		return os.MkdirTemp(c.Dir, kind+"-"+service+"-")
	}
	for _, v := range s.Volumes {
		switch v.Type {
		case types.VolumeTypeBind:
			mounts = append(mounts, mount{target: v.Target, source: v.Source})
		case types.VolumeTypeVolume:
			if v.Source == "" {
				dir, err := fresh("anonymous")
				if err != nil {
					return nil, err
				}
				mounts = append(mounts, mount{target: v.Target, source: dir})
				continue
			}
			mounts = append(mounts, mount{target: v.Target, source: filepath.Join(c.Dir, "volumes", v.Source), dir: true})
		case types.VolumeTypeTmpfs:
			dir, err := fresh("tmpfs")
			if err != nil {
				return nil, err
			}
			mounts = append(mounts, mount{target: v.Target, source: dir})
		default:
			return nil, fmt.Errorf("service %s: volume %s of type %s has no stand-in", service, v.Target, v.Type)
		}
	}
	for _, t := range s.Tmpfs {
		dir, err := fresh("tmpfs")
		if err != nil {
			return nil, err
		}
		target, _, _ := strings.Cut(t, ":")
		mounts = append(mounts, mount{target: target, source: dir})
	}
	for _, v := range image.Volumes {
		if slices.ContainsFunc(mounts, func(m mount) bool { return path.Clean(m.target) == path.Clean(v) }) {
			continue
		}
		dir, err := fresh("anonymous")
		if err != nil {
			return nil, err
		}
		mounts = append(mounts, mount{target: v, source: dir})
	}
	fileObject := func(kind, name string, def types.FileObjectConfig, target string) error {
		switch {
		case def.File != "":
			mounts = append(mounts, mount{target: target, source: def.File})
		case def.Environment != "":
			value, ok := c.Project.Environment[def.Environment]
			if !ok {
				return fmt.Errorf("service %s: %s %s comes from %s, which is not set", service, kind, name, def.Environment)
			}
			mounts = append(mounts, mount{target: target, data: &value})
		default:
			content := def.Content
			mounts = append(mounts, mount{target: target, data: &content})
		}
		return nil
	}
	for _, sec := range s.Secrets {
		def, ok := c.Project.Secrets[sec.Source]
		if !ok {
			return nil, fmt.Errorf("service %s: secret %s is not defined", service, sec.Source)
		}
		target := cmp.Or(sec.Target, sec.Source)
		if !path.IsAbs(target) {
			target = "/run/secrets/" + target
		}
		if err := fileObject("secret", sec.Source, types.FileObjectConfig(def), target); err != nil {
			return nil, err
		}
	}
	for _, cfg := range s.Configs {
		def, ok := c.Project.Configs[cfg.Source]
		if !ok {
			return nil, fmt.Errorf("service %s: config %s is not defined", service, cfg.Source)
		}
		target := cmp.Or(cfg.Target, "/"+cfg.Source)
		if !path.IsAbs(target) {
			target = "/" + target
		}
		if err := fileObject("config", cfg.Source, types.FileObjectConfig(def), target); err != nil {
			return nil, err
		}
	}

	// Outer mount points first. A mount point inside another mount would be created through the
	// outer stand-in, in a bind mount's source or a shared volume: not ours to change.
	slices.SortFunc(mounts, func(a, b mount) int { return cmp.Compare(len(path.Clean(a.target)), len(path.Clean(b.target))) })
	for _, m := range mounts {
		target := path.Clean(m.target)
		if !path.IsAbs(target) {
			return nil, fmt.Errorf("service %s: mount point %q is not an absolute path", service, m.target)
		}
		for _, outer := range ct.targets {
			if isUnder(target, outer) {
				return nil, fmt.Errorf("service %s: %s is mounted inside the mount at %s, which has no stand-in", service, target, outer)
			}
		}
		host := filepath.Join(root, filepath.FromSlash(target))
		if err := os.MkdirAll(filepath.Dir(host), 0o755); err != nil {
			return nil, fmt.Errorf("service %s: stand-in for %s: %w", service, target, err)
		}
		if m.data != nil {
			if err := os.WriteFile(host, []byte(*m.data), 0o600); err != nil {
				return nil, fmt.Errorf("service %s: stand-in for %s: %w", service, target, err)
			}
		} else {
			if m.dir {
				if err := os.MkdirAll(m.source, 0o755); err != nil {
					return nil, fmt.Errorf("service %s: stand-in for %s: %w", service, target, err)
				}
			}
			if err := os.Symlink(m.source, host); err != nil {
				return nil, fmt.Errorf("service %s: stand-in for %s: %w", service, target, err)
			}
		}
		ct.targets = append(ct.targets, target)
	}
	return ct, nil
}

// HostPath maps an absolute path inside the service's container to its stand-in on the host. ok
// is false when no mount holds the path.
func (ct *Container) HostPath(p string) (host string, ok bool) {
	if !path.IsAbs(p) {
		return "", false
	}
	p = path.Clean(p)
	for _, t := range ct.targets {
		if isUnder(p, t) {
			return filepath.Join(ct.Root, filepath.FromSlash(p)), true
		}
	}
	return "", false
}
