package integration

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/compose-spec/compose-go/v2/types"
	"go.yaml.in/yaml/v4"

	"github.com/icws/icws/internal/composefile"
)

// checkSkipped logs the services that are not ours (their images cannot run here) and parses the
// configuration files of those the stack's monitoring needs: Prometheus must scrape the admin
// ports of services that run, Grafana's provisioning must parse and point at what is mounted.
func (st *composeStack) checkSkipped() error {
	var errs []error
	for _, name := range st.skipped {
		s := st.project.Services[name]
		switch imageName(s.Image) {
		case "prom/prometheus":
			st.t.Logf("service %s (%s) is not run: not ours; its configuration is checked", name, s.Image)
			errs = append(errs, st.checkPrometheus(name, s))
		case "grafana/grafana":
			st.t.Logf("service %s (%s) is not run: not ours; its provisioning is checked", name, s.Image)
			errs = append(errs, st.checkGrafana(name, s))
		default:
			st.t.Logf("service %s (%s) is not run: not ours", name, s.Image)
		}
	}
	return errors.Join(errs...)
}

// prometheusConfig is the part of prometheus.yml the check reads.
type prometheusConfig struct {
	ScrapeConfigs []struct {
		JobName       string `yaml:"job_name"`
		MetricsPath   string `yaml:"metrics_path"`
		Scheme        string `yaml:"scheme"`
		StaticConfigs []struct {
			Targets []string `yaml:"targets"`
		} `yaml:"static_configs"`
	} `yaml:"scrape_configs"`
}

// checkPrometheus reads the configuration the service's Prometheus loads (--config.file, else the
// image's default path) from its mounts: every scrape target must be a service that runs here, at
// the port of its admin server; the targets are kept to be scraped once the stack runs.
func (st *composeStack) checkPrometheus(name string, s types.ServiceConfig) error {
	ct, err := st.fs.New(name, composefile.Image{})
	if err != nil {
		return err
	}
	file := "/etc/prometheus/prometheus.yml"
	for i, arg := range s.Command {
		if v, ok := strings.CutPrefix(arg, "--config.file="); ok {
			file = v
		} else if arg == "--config.file" && i+1 < len(s.Command) {
			file = s.Command[i+1]
		}
	}
	host, ok := ct.HostPath(file)
	if !ok {
		return fmt.Errorf("service %s: its configuration %s is not mounted", name, file)
	}
	raw, err := os.ReadFile(host)
	if err != nil {
		return fmt.Errorf("service %s: %s: %w", name, file, err)
	}
	var cfg prometheusConfig
	if err := yaml.Unmarshal(raw, &cfg); err != nil {
		return fmt.Errorf("service %s: %s: %w", name, file, err)
	}
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("service %s: %s: "+format, append([]any{name, file}, args...)...))
	}
	scraped := map[string]bool{}
	for _, job := range cfg.ScrapeConfigs {
		if job.Scheme != "" && job.Scheme != "http" {
			bad("job %s scrapes with %s; the admin servers speak http", job.JobName, job.Scheme)
		}
		for _, sc := range job.StaticConfigs {
			for _, target := range sc.Targets {
				h, portText, err := net.SplitHostPort(target)
				port, perr := strconv.Atoi(portText)
				if err != nil || perr != nil {
					bad("job %s: target %q is not host:port", job.JobName, target)
					continue
				}
				svc := st.services[h]
				switch {
				case svc == nil:
					bad("job %s: target %s names no service that runs icws", job.JobName, target)
				case svc.adminURL == "" || svc.oneShot:
					bad("job %s: target %s: service %s has no admin server", job.JobName, target, h)
				case svc.adminPort != port:
					bad("job %s: target %s: service %s serves /metrics on port %d", job.JobName, target, h, svc.adminPort)
				default:
					scraped[h] = true
					st.scrapes = append(st.scrapes, svc.adminURL+cmp.Or(job.MetricsPath, "/metrics"))
				}
			}
		}
	}
	if len(st.scrapes) == 0 && len(errs) == 0 {
		bad("scrapes nothing")
	}
	for _, n := range composefile.SortedNames(st.project) {
		if svc := st.services[n]; svc != nil && svc.adminURL != "" && !svc.oneShot && !scraped[n] {
			st.t.Logf("note: %s does not scrape service %s's admin server", file, n)
		}
	}
	return errors.Join(errs...)
}

// grafanaDatasources and grafanaDashboardProviders are the parts of Grafana's provisioning files
// the check reads.
type grafanaDatasources struct {
	APIVersion  int `yaml:"apiVersion"`
	Datasources []struct {
		Name string `yaml:"name"`
		UID  string `yaml:"uid"`
		Type string `yaml:"type"`
		URL  string `yaml:"url"`
	} `yaml:"datasources"`
}

type grafanaDashboardProviders struct {
	APIVersion int `yaml:"apiVersion"`
	Providers  []struct {
		Name    string `yaml:"name"`
		Type    string `yaml:"type"`
		Options struct {
			Path string `yaml:"path"`
		} `yaml:"options"`
	} `yaml:"providers"`
}

// checkGrafana parses the provisioning files the service's Grafana reads (GF_PATHS_PROVISIONING,
// else the image's default): datasources must name services of the file; dashboard providers must
// point at mounted directories of dashboards that parse and use provisioned datasources; the
// default home dashboard must be mounted and parse.
func (st *composeStack) checkGrafana(name string, s types.ServiceConfig) error {
	ct, err := st.fs.New(name, composefile.Image{})
	if err != nil {
		return err
	}
	env := composefile.ServiceEnv(composefile.Image{}, s)
	provisioning := cmp.Or(env["GF_PATHS_PROVISIONING"], "/etc/grafana/provisioning")
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("service %s: "+format, append([]any{name}, args...)...))
	}
	// yamlFiles reads the provisioning files of one kind; the directory may be mounted itself or
	// be inside a mount.
	yamlFiles := func(kind string) map[string][]byte {
		dir := path.Join(provisioning, kind)
		host, ok := ct.HostPath(dir)
		if !ok {
			return nil
		}
		entries, err := os.ReadDir(host)
		if err != nil {
			bad("%s: %v", dir, err)
			return nil
		}
		out := map[string][]byte{}
		for _, e := range entries {
			if ext := filepath.Ext(e.Name()); ext != ".yml" && ext != ".yaml" {
				continue
			}
			raw, err := os.ReadFile(filepath.Join(host, e.Name()))
			if err != nil {
				bad("%s/%s: %v", dir, e.Name(), err)
				continue
			}
			out[path.Join(dir, e.Name())] = raw
		}
		return out
	}

	uids := map[string]bool{}
	files := yamlFiles("datasources")
	for _, f := range slices.Sorted(maps.Keys(files)) {
		var ds grafanaDatasources
		if err := yaml.Unmarshal(files[f], &ds); err != nil {
			bad("%s: %v", f, err)
			continue
		}
		if ds.APIVersion == 0 || len(ds.Datasources) == 0 {
			bad("%s: no apiVersion or no datasources", f)
		}
		for _, d := range ds.Datasources {
			uids[d.UID] = true
			u, err := url.Parse(d.URL)
			if err != nil || u.Host == "" {
				bad("%s: datasource %s: url %q", f, d.Name, d.URL)
				continue
			}
			if _, ok := st.project.Services[u.Hostname()]; !ok {
				bad("%s: datasource %s: %s names no service of the file", f, d.Name, d.URL)
			}
		}
	}
	if len(uids) == 0 {
		bad("no datasources provisioned under %s", provisioning)
	}

	checkDashboard := func(where, file string) {
		raw, err := os.ReadFile(file)
		if err != nil {
			bad("%s: %v", where, err)
			return
		}
		var doc any
		if err := json.Unmarshal(raw, &doc); err != nil {
			bad("%s: %v", where, err)
			return
		}
		for _, uid := range datasourceUIDs(doc) {
			if !uids[uid] {
				bad("%s: datasource uid %q is not provisioned", where, uid)
			}
		}
	}
	dashboards := 0
	files = yamlFiles("dashboards")
	for _, f := range slices.Sorted(maps.Keys(files)) {
		var dp grafanaDashboardProviders
		if err := yaml.Unmarshal(files[f], &dp); err != nil {
			bad("%s: %v", f, err)
			continue
		}
		if dp.APIVersion == 0 || len(dp.Providers) == 0 {
			bad("%s: no apiVersion or no providers", f)
		}
		for _, p := range dp.Providers {
			host, ok := ct.HostPath(p.Options.Path)
			if !ok {
				bad("%s: provider %s: path %q is not mounted", f, p.Name, p.Options.Path)
				continue
			}
			entries, err := os.ReadDir(host)
			if err != nil {
				bad("%s: provider %s: %v", f, p.Name, err)
				continue
			}
			for _, e := range entries {
				if filepath.Ext(e.Name()) == ".json" {
					dashboards++
					checkDashboard(path.Join(p.Options.Path, e.Name()), filepath.Join(host, e.Name()))
				}
			}
		}
	}
	if dashboards == 0 {
		bad("no dashboards provisioned under %s", provisioning)
	}
	if home := env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]; home != "" {
		host, ok := ct.HostPath(home)
		if !ok {
			bad("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH=%s is not mounted", home)
		} else {
			checkDashboard("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH="+home, host)
		}
	}
	return errors.Join(errs...)
}

// datasourceUIDs lists the uids of every "datasource" object in a dashboard, except Grafana's
// built-in ones and template variables.
func datasourceUIDs(doc any) []string {
	var out []string
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			if ds, ok := v["datasource"].(map[string]any); ok {
				uid, _ := ds["uid"].(string)
				typ, _ := ds["type"].(string)
				if uid != "" && typ != "grafana" && typ != "datasource" && !strings.HasPrefix(uid, "$") && !strings.HasPrefix(uid, "-- ") {
					out = append(out, uid)
				}
			}
			for _, x := range v {
				walk(x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	walk(doc)
	return out
}
