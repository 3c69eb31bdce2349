// gardenlet-driver drives the extension through gardenlet's own ContainerRuntime component
// (github.com/gardener/gardener/pkg/component/extensions/containerruntime): the calls, objects,
// annotations and readiness checks are Gardener's code, not a re-implementation. tests/gardenlet.rs
// runs it against a test control plane with the extension running beside it.
//
//	gardenlet-driver --kubeconfig=K --namespace=shoot--x--y --scenario=lifecycle|migrate|restore|force-delete [--state-file=F]
//
// Exit code 0 when the scenario succeeded; otherwise 1 with the failed step on stderr. The
// migrate and restore scenarios print the ContainerRuntime's status.state on stdout as one line
// `STATE <json>`. Before each Deploy/Restore the worker pools are written into the Cluster's shoot,
// as gardenlet syncs the Cluster at the start of every flow.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	gardencorev1beta1 "github.com/gardener/gardener/pkg/apis/core/v1beta1"
	extensionsv1alpha1 "github.com/gardener/gardener/pkg/apis/extensions/v1alpha1"
	resourcesv1alpha1 "github.com/gardener/gardener/pkg/apis/resources/v1alpha1"
	"github.com/gardener/gardener/pkg/component/extensions/containerruntime"
	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
)

const (
	kataAPI   = "kata.runtime.extensions.config.gardener.cloud/v1alpha1"
	sharedMR  = "extension-runtime-kata"
	installMR = "extension-runtime-kata-installation-"
	// a finalizer standing in for a shoot resource manager that cannot clean up
	stuckFinalizer = "gardenlet-driver.test.invalid/stuck"

	interval        = 500 * time.Millisecond
	severeThreshold = 20 * time.Second
	timeout         = 60 * time.Second
)

type driver struct {
	c   client.Client
	ns  string
	log logr.Logger
}

func main() {
	// a flag set of its own: controller-runtime registers a global --kubeconfig
	flags := flag.NewFlagSet("gardenlet-driver", flag.ExitOnError)
	kubeconfig := flags.String("kubeconfig", "", "kubeconfig of the seed")
	namespace := flags.String("namespace", "", "the shoot namespace in the seed")
	scenario := flags.String("scenario", "", "lifecycle, migrate, restore or force-delete")
	stateFile := flags.String("state-file", "", "restore: file with the status.state printed by migrate")
	_ = flags.Parse(os.Args[1:])

	fail := func(err error) {
		fmt.Fprintf(os.Stderr, "gardenlet-driver: scenario %q in %s FAILED: %v\n", *scenario, *namespace, err)
		os.Exit(1)
	}
	if *kubeconfig == "" || *namespace == "" {
		fail(errors.New("--kubeconfig and --namespace are required"))
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		fail(fmt.Errorf("reading the kubeconfig: %w", err))
	}
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{extensionsv1alpha1.AddToScheme, resourcesv1alpha1.AddToScheme} {
		if err := add(scheme); err != nil {
			fail(err)
		}
	}
	cfg.QPS, cfg.Burst = 100, 200 // client-go's default of 5/s would throttle the waits
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		fail(fmt.Errorf("creating the client: %w", err))
	}
	log := funcr.New(func(prefix, args string) { fmt.Fprintln(os.Stderr, prefix, args) }, funcr.Options{})
	ctrllog.SetLogger(log)
	d := &driver{c: c, ns: *namespace, log: log.WithName("containerruntime")}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	switch *scenario {
	case "lifecycle":
		err = d.lifecycle(ctx)
	case "migrate":
		err = d.migrate(ctx)
	case "restore":
		err = d.restore(ctx, *stateFile)
	case "force-delete":
		err = d.forceDelete(ctx)
	default:
		err = fmt.Errorf("unknown --scenario %q", *scenario)
	}
	if err != nil {
		fail(err)
	}
	fmt.Fprintf(os.Stderr, "gardenlet-driver: scenario %q in %s succeeded\n", *scenario, *namespace)
}

// worker is a pool with kata; without hypervisors the pool gets the extension's default.
func worker(name string, hypervisors ...string) gardencorev1beta1.Worker {
	config := map[string]any{"apiVersion": kataAPI, "kind": "KataConfiguration"}
	if len(hypervisors) > 0 {
		config["hypervisors"] = hypervisors
	}
	pc, _ := json.Marshal(config)
	version := "1877.0"
	return gardencorev1beta1.Worker{
		Name:    name,
		Machine: gardencorev1beta1.Machine{Type: "m5.large", Image: &gardencorev1beta1.ShootMachineImage{Name: "gardenlinux", Version: &version}},
		Minimum: 1,
		Maximum: 2,
		CRI: &gardencorev1beta1.CRI{
			Name:              gardencorev1beta1.CRINameContainerD,
			ContainerRuntimes: []gardencorev1beta1.ContainerRuntime{{Type: "kata", ProviderConfig: &runtime.RawExtension{Raw: pc}}},
		},
	}
}

// component writes the pools into the Cluster's shoot (gardenlet syncs the Cluster first) and
// returns gardenlet's component for them, new for every flow as in gardenlet.
func (d *driver) component(ctx context.Context, workers ...gardencorev1beta1.Worker) (containerruntime.Interface, error) {
	patch, err := json.Marshal(map[string]any{"spec": map[string]any{"shoot": map[string]any{"spec": map[string]any{"provider": map[string]any{"workers": workers}}}}})
	if err != nil {
		return nil, err
	}
	cluster := &extensionsv1alpha1.Cluster{}
	cluster.Name = d.ns
	if err := d.c.Patch(ctx, cluster, client.RawPatch(types.MergePatchType, patch)); err != nil {
		return nil, fmt.Errorf("syncing the workers into Cluster %s: %w", d.ns, err)
	}
	values := &containerruntime.Values{Namespace: d.ns, Workers: workers}
	return containerruntime.New(d.log, d.c, values, interval, severeThreshold, timeout), nil
}

type step struct {
	name string
	fn   func(context.Context) error
}

// run runs gardenlet's steps in order, naming the one that failed.
func run(ctx context.Context, steps ...step) error {
	for _, s := range steps {
		start := time.Now()
		if err := s.fn(ctx); err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
		fmt.Fprintf(os.Stderr, "gardenlet-driver: %s done in %s\n", s.name, time.Since(start).Round(time.Millisecond))
	}
	return nil
}

func (d *driver) lifecycle(ctx context.Context) error {
	cr, err := d.component(ctx, worker("a", "qemu"), worker("b", "qemu"))
	if err != nil {
		return err
	}
	if err := run(ctx, step{"Deploy a+b", cr.Deploy}, step{"Wait a+b", cr.Wait}); err != nil {
		return err
	}
	if err := d.expect(ctx, []string{"kata-a", "kata-b"}, []string{sharedMR, installMR + "a", installMR + "b"}); err != nil {
		return err
	}

	if cr, err = d.component(ctx, worker("a", "clh"), worker("b", "qemu")); err != nil {
		return err
	}
	if err := run(ctx, step{"Deploy a(clh)+b", cr.Deploy}, step{"Wait a(clh)+b", cr.Wait}); err != nil {
		return err
	}
	if err := d.expectApplied(ctx, "kata-a", []string{"clh"}); err != nil {
		return err
	}

	if cr, err = d.component(ctx, worker("a", "clh")); err != nil {
		return err
	}
	if err := run(ctx, step{"Deploy a", cr.Deploy}, step{"Wait a", cr.Wait},
		step{"DeleteStaleResources", cr.DeleteStaleResources}, step{"WaitCleanupStaleResources", cr.WaitCleanupStaleResources}); err != nil {
		return err
	}
	if err := d.expect(ctx, []string{"kata-a"}, []string{sharedMR, installMR + "a"}); err != nil {
		return err
	}

	if err := run(ctx, step{"Destroy", cr.Destroy}, step{"WaitCleanup", cr.WaitCleanup}); err != nil {
		return err
	}
	return d.expect(ctx, nil, nil)
}

func (d *driver) migrate(ctx context.Context) error {
	cr, err := d.component(ctx, worker("a"))
	if err != nil {
		return err
	}
	if err := run(ctx, step{"Deploy a", cr.Deploy}, step{"Wait a", cr.Wait}, step{"Migrate", cr.Migrate}, step{"WaitMigrate", cr.WaitMigrate}); err != nil {
		return err
	}
	// what gardenlet persists into the ShootState for this object
	if err := d.printState(ctx, "kata-a"); err != nil {
		return err
	}
	// the source seed lets go of its ManagedResources (keeping the shoot's objects), and
	// gardenlet deletes the migrated extension objects
	if err := run(ctx, step{"Destroy (after migration)", cr.Destroy}, step{"WaitCleanup (after migration)", cr.WaitCleanup}); err != nil {
		return err
	}
	return d.expect(ctx, nil, nil)
}

func (d *driver) restore(ctx context.Context, stateFile string) error {
	raw, err := os.ReadFile(stateFile)
	if err != nil {
		return fmt.Errorf("--state-file: %w", err)
	}
	raw = []byte(strings.TrimPrefix(strings.TrimSpace(string(raw)), "STATE "))
	if !json.Valid(raw) {
		return fmt.Errorf("--state-file %s holds no JSON: %q", stateFile, raw)
	}
	name := "kata-a"
	shootState := &gardencorev1beta1.ShootState{Spec: gardencorev1beta1.ShootStateSpec{
		Extensions: []gardencorev1beta1.ExtensionResourceState{{
			Kind:  extensionsv1alpha1.ContainerRuntimeResource,
			Name:  &name,
			State: &runtime.RawExtension{Raw: raw},
		}},
	}}
	cr, err := d.component(ctx, worker("a"))
	if err != nil {
		return err
	}
	restore := func(ctx context.Context) error { return cr.Restore(ctx, shootState) }
	if err := run(ctx, step{"Restore a", restore}, step{"Wait a", cr.Wait}); err != nil {
		return err
	}
	if err := d.expect(ctx, []string{"kata-a"}, []string{sharedMR, installMR + "a"}); err != nil {
		return err
	}
	return d.printState(ctx, "kata-a")
}

func (d *driver) forceDelete(ctx context.Context) error {
	cr, err := d.component(ctx, worker("a", "qemu"))
	if err != nil {
		return err
	}
	if err := run(ctx, step{"Deploy a", cr.Deploy}, step{"Wait a", cr.Wait}); err != nil {
		return err
	}
	if err := d.expect(ctx, []string{"kata-a"}, []string{sharedMR, installMR + "a"}); err != nil {
		return err
	}
	// the shoot cannot be cleaned up: its resource manager never releases the ManagedResources
	mrs, err := d.managedResources(ctx)
	if err != nil {
		return err
	}
	for i := range mrs {
		mrs[i].Finalizers = append(mrs[i].Finalizers, stuckFinalizer)
		if err := d.c.Update(ctx, &mrs[i]); err != nil {
			return fmt.Errorf("holding ManagedResource %s: %w", mrs[i].Name, err)
		}
	}
	// with the shoot annotated for force deletion, the extension must not wait for them
	if err := run(ctx, step{"Destroy", cr.Destroy}, step{"WaitCleanup", cr.WaitCleanup}); err != nil {
		return err
	}
	if mrs, err = d.managedResources(ctx); err != nil {
		return err
	}
	for i := range mrs {
		if mrs[i].DeletionTimestamp == nil {
			return fmt.Errorf("ManagedResource %s was not deleted by the force deletion", mrs[i].Name)
		}
		mrs[i].Finalizers = slices.DeleteFunc(mrs[i].Finalizers, func(f string) bool { return f == stuckFinalizer })
		if err := d.c.Update(ctx, &mrs[i]); err != nil {
			return fmt.Errorf("releasing ManagedResource %s: %w", mrs[i].Name, err)
		}
	}
	return d.expect(ctx, nil, nil)
}

func (d *driver) managedResources(ctx context.Context) ([]resourcesv1alpha1.ManagedResource, error) {
	list := &resourcesv1alpha1.ManagedResourceList{}
	if err := d.c.List(ctx, list, client.InNamespace(d.ns)); err != nil {
		return nil, fmt.Errorf("listing ManagedResources: %w", err)
	}
	return list.Items, nil
}

// expect checks the ContainerRuntimes and ManagedResources in the namespace by name.
func (d *driver) expect(ctx context.Context, crs, mrs []string) error {
	crList := &extensionsv1alpha1.ContainerRuntimeList{}
	if err := d.c.List(ctx, crList, client.InNamespace(d.ns)); err != nil {
		return fmt.Errorf("listing ContainerRuntimes: %w", err)
	}
	var gotCRs, gotMRs []string
	for _, o := range crList.Items {
		gotCRs = append(gotCRs, o.Name)
	}
	items, err := d.managedResources(ctx)
	if err != nil {
		return err
	}
	for _, o := range items {
		gotMRs = append(gotMRs, o.Name)
	}
	slices.Sort(gotCRs)
	slices.Sort(gotMRs)
	if !slices.Equal(gotCRs, crs) || !slices.Equal(gotMRs, mrs) {
		return fmt.Errorf("expected ContainerRuntimes %v and ManagedResources %v, found %v and %v", crs, mrs, gotCRs, gotMRs)
	}
	return nil
}

// expectApplied checks that the extension recorded the pool's new hypervisors as applied.
func (d *driver) expectApplied(ctx context.Context, name string, hypervisors []string) error {
	cr := &extensionsv1alpha1.ContainerRuntime{}
	if err := d.c.Get(ctx, client.ObjectKey{Namespace: d.ns, Name: name}, cr); err != nil {
		return err
	}
	var status struct {
		AppliedConfiguration struct {
			Hypervisors []string `json:"hypervisors"`
		} `json:"appliedConfiguration"`
	}
	if ps := cr.Status.ProviderStatus; ps == nil || json.Unmarshal(ps.Raw, &status) != nil ||
		!slices.Equal(status.AppliedConfiguration.Hypervisors, hypervisors) {
		return fmt.Errorf("%s: providerStatus does not record hypervisors %v as applied: %s", name, hypervisors, rawString(cr.Status.ProviderStatus))
	}
	return nil
}

func (d *driver) printState(ctx context.Context, name string) error {
	cr := &extensionsv1alpha1.ContainerRuntime{}
	if err := d.c.Get(ctx, client.ObjectKey{Namespace: d.ns, Name: name}, cr); err != nil {
		return err
	}
	if cr.Status.State == nil || len(cr.Status.State.Raw) == 0 {
		return fmt.Errorf("%s has no status.state", name)
	}
	fmt.Printf("STATE %s\n", cr.Status.State.Raw)
	return nil
}

func rawString(r *runtime.RawExtension) string {
	if r == nil {
		return "<none>"
	}
	return string(r.Raw)
}
