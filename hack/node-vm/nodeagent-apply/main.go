// nodeagent-apply writes an OperatingSystemConfig (JSON, as the extension's webhook left it) into a
// root file system the way gardener-node-agent v1.149 applies it on a node. It exists so that the
// node VM tests (tests/node_vm.rs) boot exactly what a real node gets; it is test machinery, not
// part of the extension.
//
// Behaviour mirrored from gardener-node-agent (pkg/nodeagent/controller/operatingsystemconfig at
// github.com/gardener/gardener v1.149.3), written here independently:
//   - reconciler.go, applyChangedInlineFiles: inline files are decoded (encoding "b64" or plain),
//     parent directories are created 0755, files get spec permissions or 0600 by default.
//   - reconciler.go, applyChangedUnits: unit content goes to /etc/systemd/system/<name> with mode
//     0600, drop-ins to <name>.d/<drop-in name>; units are enabled unless enable=false.
//   - containerd_config.go, ensureContainerdDefaultConfig: without /etc/containerd/config.toml the
//     output of `containerd config default` is written first.
//   - containerd_config.go, ensureContainerdConfiguration: the TOML is decoded into a map, then the
//     registry config_path, the conf.d import, the sandbox image, the CNI bin dir(s) (bin_dirs for
//     config version >= 3 on containerd >= 2.2), the cgroup driver and every criConfig.containerd
//     plugin entry are set with structuredmap.SetMapEntry (the same helper node-agent uses): "add"
//     JSON-decodes the values over the existing table (keys are merged, never removed), "remove"
//     drops the table; the runtimes path is translated for config version >= 3. The map is
//     encoded again with go-toml v1.
//   - files and units no longer in the OSC are removed (-previous: the OSC applied before), as
//     node-agent does with the last applied OSC; keys it once merged into config.toml stay.
//
// Usage: nodeagent-apply -root DIR -osc mutated.json [-previous old.json] -containerd BIN
package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/gardener/gardener/pkg/utils/structuredmap"
	"github.com/pelletier/go-toml"
)

type osc struct {
	Spec struct {
		Files []struct {
			Path        string `json:"path"`
			Permissions *int32 `json:"permissions"`
			Content     struct {
				Inline *struct {
					Encoding string `json:"encoding"`
					Data     string `json:"data"`
				} `json:"inline"`
			} `json:"content"`
		} `json:"files"`
		Units []struct {
			Name    string  `json:"name"`
			Enable  *bool   `json:"enable"`
			Content *string `json:"content"`
			DropIns []struct {
				Name    string `json:"name"`
				Content string `json:"content"`
			} `json:"dropIns"`
		} `json:"units"`
		CRIConfig *struct {
			CgroupDriver *string `json:"cgroupDriver"`
			Containerd   *struct {
				SandboxImage string `json:"sandboxImage"`
				Plugins      []struct {
					Op     *string         `json:"op"`
					Path   []string        `json:"path"`
					Values json.RawMessage `json:"values"`
				} `json:"plugins"`
			} `json:"containerd"`
		} `json:"criConfig"`
	} `json:"spec"`
}

func main() {
	root := flag.String("root", "", "root file system to write into")
	oscPath := flag.String("osc", "", "the OperatingSystemConfig as JSON")
	previous := flag.String("previous", "", "the OperatingSystemConfig applied before, if any")
	containerd := flag.String("containerd", "", "containerd binary (for `config default` and its version)")
	flag.Parse()
	if *root == "" || *oscPath == "" || *containerd == "" {
		flag.Usage()
		os.Exit(2)
	}
	if err := run(*root, *oscPath, *previous, *containerd); err != nil {
		fmt.Fprintln(os.Stderr, "nodeagent-apply:", err)
		os.Exit(1)
	}
}

func load(path string) (*osc, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	o := &osc{}
	if err := json.Unmarshal(raw, o); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return o, nil
}

func run(root, oscPath, previous, containerd string) error {
	o, err := load(oscPath)
	if err != nil {
		return err
	}
	if previous != "" {
		old, err := load(previous)
		if err != nil {
			return err
		}
		if err := removeDeleted(root, old, o); err != nil {
			return err
		}
	}
	for _, f := range o.Spec.Files {
		if f.Content.Inline == nil {
			return fmt.Errorf("file %s: only inline content is supported here", f.Path)
		}
		data := []byte(f.Content.Inline.Data)
		if f.Content.Inline.Encoding == "b64" || f.Content.Inline.Encoding == "base64" {
			if data, err = base64.StdEncoding.DecodeString(f.Content.Inline.Data); err != nil {
				return fmt.Errorf("file %s: %w", f.Path, err)
			}
		}
		mode := os.FileMode(0o600)
		if f.Permissions != nil {
			mode = os.FileMode(*f.Permissions)
		}
		if err := writeFile(root, f.Path, data, mode); err != nil {
			return err
		}
	}
	for _, u := range o.Spec.Units {
		unitPath := filepath.Join("/etc/systemd/system", u.Name)
		if u.Content != nil {
			if err := writeFile(root, unitPath, []byte(*u.Content), 0o600); err != nil {
				return err
			}
		}
		for _, d := range u.DropIns {
			if err := writeFile(root, filepath.Join(unitPath+".d", d.Name), []byte(d.Content), 0o600); err != nil {
				return err
			}
		}
		if u.Enable == nil || *u.Enable {
			out, err := exec.Command("systemctl", "--root", root, "enable", u.Name).CombinedOutput()
			if err != nil {
				return fmt.Errorf("systemctl enable %s: %w: %s", u.Name, err, out)
			}
		}
	}
	if o.Spec.CRIConfig != nil {
		return containerdConfig(root, o, containerd)
	}
	return nil
}

func writeFile(root, path string, data []byte, mode os.FileMode) error {
	full := filepath.Join(root, path)
	if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
		return err
	}
	tmp := full + ".nodeagent-apply"
	if err := os.WriteFile(tmp, data, mode); err != nil {
		return err
	}
	if err := os.Chmod(tmp, mode); err != nil {
		return err
	}
	return os.Rename(tmp, full)
}

func removeDeleted(root string, old, cur *osc) error {
	files := map[string]bool{}
	for _, f := range cur.Spec.Files {
		files[f.Path] = true
	}
	for _, f := range old.Spec.Files {
		if !files[f.Path] {
			if err := os.Remove(filepath.Join(root, f.Path)); err != nil && !os.IsNotExist(err) {
				return err
			}
		}
	}
	units := map[string]bool{}
	for _, u := range cur.Spec.Units {
		units[u.Name] = true
	}
	for _, u := range old.Spec.Units {
		if units[u.Name] {
			continue
		}
		// node-agent stops, disables and deletes a unit that left the OSC
		_ = exec.Command("systemctl", "--root", root, "disable", u.Name).Run()
		unitPath := filepath.Join(root, "/etc/systemd/system", u.Name)
		if err := os.Remove(unitPath); err != nil && !os.IsNotExist(err) {
			return err
		}
		if err := os.RemoveAll(unitPath + ".d"); err != nil {
			return err
		}
	}
	return nil
}

func containerdVersionAtLeast22(containerd string) (bool, error) {
	out, err := exec.Command(containerd, "--version").Output()
	if err != nil {
		return false, fmt.Errorf("%s --version: %w", containerd, err)
	}
	// "containerd github.com/containerd/containerd/v2 v2.2.9 <revision>"
	for _, field := range strings.Fields(string(out)) {
		v := strings.TrimPrefix(field, "v")
		parts := strings.SplitN(v, ".", 3)
		if len(parts) < 2 || !strings.HasPrefix(field, "v") {
			continue
		}
		major, err1 := strconv.Atoi(parts[0])
		minor, err2 := strconv.Atoi(parts[1])
		if err1 == nil && err2 == nil {
			return major > 2 || (major == 2 && minor >= 2), nil
		}
	}
	return false, fmt.Errorf("no version in %q", out)
}

func containerdConfig(root string, o *osc, containerd string) error {
	configFile := filepath.Join(root, "/etc/containerd/config.toml")
	for _, d := range []string{"/etc/containerd", "/etc/containerd/conf.d", "/etc/containerd/certs.d"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			return err
		}
	}
	if _, err := os.Stat(configFile); os.IsNotExist(err) {
		out, err := exec.Command(containerd, "config", "default").Output()
		if err != nil {
			return fmt.Errorf("containerd config default: %w", err)
		}
		if err := os.WriteFile(configFile, out, 0o644); err != nil {
			return err
		}
	}
	raw, err := os.ReadFile(configFile)
	if err != nil {
		return err
	}
	content := map[string]any{}
	if err := toml.Unmarshal(raw, &content); err != nil {
		return fmt.Errorf("decoding %s: %w", configFile, err)
	}
	version := int64(1)
	if v, ok := content["version"]; ok {
		if version, ok = v.(int64); !ok {
			return fmt.Errorf("config version %v is not an integer", v)
		}
	}
	v3 := version >= 3
	images, runtime := "io.containerd.grpc.v1.cri", "io.containerd.grpc.v1.cri"
	if v3 {
		images, runtime = "io.containerd.cri.v1.images", "io.containerd.cri.v1.runtime"
	}
	set := func(path structuredmap.Path, fn structuredmap.SetFn) error {
		return structuredmap.SetMapEntry(content, path, fn)
	}
	constant := func(v any) structuredmap.SetFn { return func(any) (any, error) { return v, nil } }

	if err := set(structuredmap.Path{"plugins", images, "registry", "config_path"}, constant("/etc/containerd/certs.d")); err != nil {
		return err
	}
	if err := set(structuredmap.Path{"imports"}, func(v any) (any, error) {
		imports, _ := v.([]any)
		for _, i := range imports {
			if i == "/etc/containerd/conf.d/*.toml" {
				return v, nil
			}
		}
		return append(imports, "/etc/containerd/conf.d/*.toml"), nil
	}); err != nil {
		return err
	}
	c := o.Spec.CRIConfig
	sandbox := structuredmap.Path{"plugins", images, "sandbox_image"}
	if v3 {
		sandbox = structuredmap.Path{"plugins", images, "pinned_images", "sandbox"}
	}
	if err := set(sandbox, func(v any) (any, error) {
		if c.Containerd == nil {
			return v, nil
		}
		return c.Containerd.SandboxImage, nil
	}); err != nil {
		return err
	}
	ge22, err := containerdVersionAtLeast22(containerd)
	if err != nil {
		return err
	}
	if v3 && ge22 {
		if err := set(structuredmap.Path{"plugins", runtime, "cni", "bin_dirs"}, constant([]string{"/opt/cni/bin"})); err != nil {
			return err
		}
		if err := set(structuredmap.Path{"plugins", runtime, "cni", "bin_dir"}, constant(nil)); err != nil {
			return err
		}
	} else if err := set(structuredmap.Path{"plugins", runtime, "cni", "bin_dir"}, constant("/opt/cni/bin")); err != nil {
		return err
	}
	if c.CgroupDriver != nil {
		path := structuredmap.Path{"plugins", runtime, "containerd", "runtimes", "runc", "options", "SystemdCgroup"}
		if err := set(path, constant(*c.CgroupDriver == "systemd")); err != nil {
			return err
		}
	}
	if c.Containerd != nil {
		for _, p := range c.Containerd.Plugins {
			path := append(structuredmap.Path{"plugins"}, p.Path...)
			oldRuntimes := structuredmap.Path{"plugins", "io.containerd.grpc.v1.cri", "containerd", "runtimes"}
			if v3 && len(path) >= len(oldRuntimes) && equal(path[:len(oldRuntimes)], oldRuntimes) {
				path = append(structuredmap.Path{"plugins", "io.containerd.cri.v1.runtime", "containerd", "runtimes"}, path[len(oldRuntimes):]...)
			}
			op := "add"
			if p.Op != nil {
				op = *p.Op
			}
			values := p.Values
			if err := set(path, func(v any) (any, error) {
				switch op {
				case "add":
					m, ok := v.(map[string]any)
					if !ok || m == nil {
						m = map[string]any{}
					}
					if len(values) == 0 || string(values) == "null" {
						return m, nil
					}
					if err := json.Unmarshal(values, &m); err != nil {
						return nil, err
					}
					return m, nil
				case "remove":
					return nil, nil
				default:
					return nil, fmt.Errorf("operation %q is not supported", op)
				}
			}); err != nil {
				return fmt.Errorf("plugin %v: %w", p.Path, err)
			}
		}
	}
	var buf bytes.Buffer
	if err := toml.NewEncoder(&buf).Encode(content); err != nil {
		return err
	}
	return os.WriteFile(configFile, buf.Bytes(), 0o644)
}

func equal(a, b structuredmap.Path) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
