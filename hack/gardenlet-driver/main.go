// gardenlet-driver drives the extension through gardenlet's own ContainerRuntime component
// (github.com/gardener/gardener/pkg/component/extensions/containerruntime): the calls, objects,
// annotations and readiness checks are Gardener's code, not a re-implementation. tests/gardenlet.rs
// runs it against a test control plane with the extension running beside it.
//
//	gardenlet-driver --kubeconfig=K --namespace=shoot--x--y --scenario=S [flags]
//
//	lifecycle     Deploy/Wait two pools, change one, drop one (DeleteStaleResources), Destroy/WaitCleanup
//	mass-delete   Deploy/Wait six pools, then Destroy/WaitCleanup all of them at once
//	deploy        Deploy/Wait the pools of --pools (comma-separated names, hypervisor qemu)
//	migrate, restore [--state-file=F], force-delete
//	health        fold the ContainerRuntimes' conditions into the Shoot's SystemComponentsHealthy
//	              [--expect-status=True|False|Progressing [--expect-reason=R]] [--heartbeat-namespace=N]
//
// Exit code 0 when the scenario succeeded; otherwise 1 with the failed step on stderr. The
// migrate and restore scenarios print the ContainerRuntime's status.state on stdout as one line
// `STATE <json>`; health prints the folded Shoot condition as one line
// `CONDITION <status> <reason> <message>`. Before each Deploy/Restore the worker pools are written
// into the Cluster's shoot, as gardenlet syncs the Cluster at the start of every flow.
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

	v1beta1helper "github.com/gardener/gardener/pkg/api/core/v1beta1/helper"
	gardencorev1beta1 "github.com/gardener/gardener/pkg/apis/core/v1beta1"
	v1beta1constants "github.com/gardener/gardener/pkg/apis/core/v1beta1/constants"
	extensionsv1alpha1 "github.com/gardener/gardener/pkg/apis/extensions/v1alpha1"
	resourcesv1alpha1 "github.com/gardener/gardener/pkg/apis/resources/v1alpha1"
	"github.com/gardener/gardener/pkg/component/extensions/containerruntime"
	healthchecker "github.com/gardener/gardener/pkg/utils/kubernetes/health/checker"
	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"
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
	scenario := flags.String("scenario", "", "lifecycle, mass-delete, deploy, migrate, restore, force-delete or health")
	stateFile := flags.String("state-file", "", "restore: file with the status.state printed by migrate")
	pools := flags.String("pools", "a,b", "deploy: the worker pools (comma-separated)")
	expectStatus := flags.String("expect-status", "", "health: poll (up to 60 s) until the folded condition has this status (True, False, Progressing)")
	expectReason := flags.String("expect-reason", "", "health: with --expect-status, also this reason")
	heartbeatNamespace := flags.String("heartbeat-namespace", "", "health: namespace of the extension's heartbeat Lease; enables gardenlet's default stale-report check (5m)")
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
	for _, add := range []func(*runtime.Scheme) error{extensionsv1alpha1.AddToScheme, resourcesv1alpha1.AddToScheme, coordinationv1.AddToScheme} {
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
	case "mass-delete":
		err = d.massDelete(ctx)
	case "deploy":
		err = d.deploy(ctx, strings.Split(*pools, ","))
	case "health":
		err = d.health(ctx, healthOptions{
			expectStatus:       gardencorev1beta1.ConditionStatus(*expectStatus),
			expectReason:       *expectReason,
			heartbeatNamespace: *heartbeatNamespace,
		})
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

// massDelete deploys six pools and then deletes all of them in one go, as gardenlet does when the
// shoot is deleted: Destroy deletes every ContainerRuntime of the shoot at once.
func (d *driver) massDelete(ctx context.Context) error {
	var (
		workers []gardencorev1beta1.Worker
		crs     []string
		mrs     = []string{sharedMR}
	)
	for i, name := range []string{"a", "b", "c", "d", "e", "f"} {
		switch i % 3 {
		case 0:
			workers = append(workers, worker(name, "qemu"))
		case 1:
			workers = append(workers, worker(name, "clh"))
		default:
			workers = append(workers, worker(name)) // the extension's default
		}
		crs = append(crs, "kata-"+name)
		mrs = append(mrs, installMR+name)
	}
	slices.Sort(mrs)
	cr, err := d.component(ctx, workers...)
	if err != nil {
		return err
	}
	if err := run(ctx, step{"Deploy 6 pools", cr.Deploy}, step{"Wait 6 pools", cr.Wait}); err != nil {
		return err
	}
	if err := d.expect(ctx, crs, mrs); err != nil {
		return err
	}
	if err := run(ctx, step{"Destroy 6 pools", cr.Destroy}, step{"WaitCleanup 6 pools", cr.WaitCleanup}); err != nil {
		return err
	}
	return d.expect(ctx, nil, nil)
}

// deploy reconciles the given pools (hypervisor qemu) and leaves them in place.
func (d *driver) deploy(ctx context.Context, pools []string) error {
	var (
		workers []gardencorev1beta1.Worker
		crs     []string
		mrs     = []string{sharedMR}
	)
	for _, name := range pools {
		workers = append(workers, worker(name, "qemu"))
		crs = append(crs, "kata-"+name)
		mrs = append(mrs, installMR+name)
	}
	slices.Sort(crs)
	slices.Sort(mrs)
	cr, err := d.component(ctx, workers...)
	if err != nil {
		return err
	}
	what := strings.Join(pools, "+")
	if err := run(ctx, step{"Deploy " + what, cr.Deploy}, step{"Wait " + what, cr.Wait}); err != nil {
		return err
	}
	return d.expect(ctx, crs, mrs)
}

type healthOptions struct {
	expectStatus       gardencorev1beta1.ConditionStatus
	expectReason       string
	heartbeatNamespace string
}

// gardenlet's default for controllers.shootCare.staleExtensionHealthChecks.threshold (enabled by default)
const staleExtensionHealthCheckThreshold = 5 * time.Minute

// health computes the Shoot's SystemComponentsHealthy condition from the seed side the way
// gardenlet's shoot care controller does, with gardenlet's own checker
// (pkg/utils/kubernetes/health/checker): the extensions' SystemComponentsHealthy conditions are
// folded by HealthChecker.CheckExtensionCondition, then the ManagedResources by
// HealthChecker.CheckManagedResources. gardenlet's remaining step, the VPN tunnel check, needs a
// port-forward to a pod in the shoot and is left out: when both checks pass, the condition is the
// True that gardenlet reports with a working tunnel.
//
// The care controller's Health.Check cannot be called instead: it needs a shoot client whose
// tunnel pod answers a port-forward (without it SystemComponentsHealthy is Unknown and the
// extensions are never looked at), and ControllerRegistrations/-Installations in a garden
// (without them getAllExtensionConditions fails and no extension condition is folded at all).
//
// Like gardenlet, it keeps the folded condition from one check to the next (starting from a Shoot
// that has none yet) and uses the defaults of gardenlet's configuration API: no condition
// thresholds, no ManagedResource progressing threshold, stale extension reports after 5 minutes
// (the latter only with --heartbeat-namespace, the namespace of the extension's
// gardener-extension-heartbeat Lease, which gardenlet finds through the ControllerInstallation).
// gardenlet's Helm chart sets a 1m threshold for SystemComponentsHealthy (a failure from True is
// Progressing for a minute first) and a 1h ManagedResource progressing threshold; neither is used.
func (d *driver) health(ctx context.Context, o healthOptions) error {
	switch o.expectStatus {
	case "", gardencorev1beta1.ConditionTrue, gardencorev1beta1.ConditionFalse, gardencorev1beta1.ConditionProgressing:
	default:
		return fmt.Errorf("--expect-status=%s: want True, False or Progressing", o.expectStatus)
	}
	clk := clock.RealClock{}
	checker := healthchecker.NewHealthChecker(d.log.WithName("care"), d.c, clk,
		healthchecker.WithConditionThresholds(map[gardencorev1beta1.ConditionType]time.Duration{}))
	current := v1beta1helper.GetOrInitConditionWithClock(clk, nil, gardencorev1beta1.ShootSystemComponentsHealthy)

	deadline := time.Now().Add(timeout)
	for {
		folded, err := d.foldSystemComponents(ctx, checker, clk, current, o.heartbeatNamespace)
		if err != nil {
			return err
		}
		if folded.Status != current.Status || folded.Reason != current.Reason || folded.Message != current.Message {
			fmt.Fprintf(os.Stderr, "gardenlet-driver: Shoot SystemComponentsHealthy %s %s: %s\n", folded.Status, folded.Reason, folded.Message)
		}
		current = folded
		matched := o.expectStatus == "" ||
			(current.Status == o.expectStatus && (o.expectReason == "" || current.Reason == o.expectReason))
		if matched || time.Now().After(deadline) {
			fmt.Printf("CONDITION %s %s %s\n", current.Status, current.Reason, strings.ReplaceAll(current.Message, "\n", " "))
			if !matched {
				want := string(o.expectStatus)
				if o.expectReason != "" {
					want += " " + o.expectReason
				}
				return fmt.Errorf("the Shoot's SystemComponentsHealthy is not %s after %s: %s %s: %s", want, timeout, current.Status, current.Reason, current.Message)
			}
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(interval):
		}
	}
}

// foldSystemComponents is one care run for SystemComponentsHealthy (seed side, see health).
func (d *driver) foldSystemComponents(ctx context.Context, checker *healthchecker.HealthChecker, clk clock.Clock, current gardencorev1beta1.Condition, heartbeatNamespace string) (gardencorev1beta1.Condition, error) {
	var (
		stale     *metav1.Duration
		heartbeat *metav1.MicroTime
	)
	if heartbeatNamespace != "" {
		stale = &metav1.Duration{Duration: staleExtensionHealthCheckThreshold}
		lease := &coordinationv1.Lease{}
		switch err := d.c.Get(ctx, client.ObjectKey{Namespace: heartbeatNamespace, Name: "gardener-extension-heartbeat"}, lease); {
		case err == nil:
			heartbeat = lease.Spec.RenewTime
		case apierrors.IsNotFound(err): // no heartbeat: a stale report, as for gardenlet
		default:
			return current, fmt.Errorf("reading the heartbeat Lease: %w", err)
		}
	}

	crList := &extensionsv1alpha1.ContainerRuntimeList{}
	if err := d.c.List(ctx, crList, client.InNamespace(d.ns)); err != nil {
		return current, fmt.Errorf("listing ContainerRuntimes: %w", err)
	}
	var reports []healthchecker.ExtensionCondition
	for i := range crList.Items {
		cr := &crList.Items[i]
		gvk, err := apiutil.GVKForObject(cr, d.c.Scheme())
		if err != nil {
			return current, err
		}
		for _, c := range cr.Status.Conditions {
			if c.Type != gardencorev1beta1.ShootSystemComponentsHealthy {
				continue
			}
			reports = append(reports, healthchecker.ExtensionCondition{
				Condition:          c,
				ExtensionType:      gvk.Kind,
				ExtensionName:      cr.Name,
				ExtensionNamespace: cr.Namespace,
				LastHeartbeatTime:  heartbeat,
			})
		}
	}
	if exit := checker.CheckExtensionCondition(current, reports, stale); exit != nil {
		return *exit, nil
	}

	mrs, err := d.managedResources(ctx)
	if err != nil {
		return current, err
	}
	shootSide := func(mr resourcesv1alpha1.ManagedResource) bool {
		return mr.Spec.Class == nil || mr.Labels[v1beta1constants.LabelCareConditionType] == string(gardencorev1beta1.ShootSystemComponentsHealthy)
	}
	if exit := checker.CheckManagedResources(current, mrs, shootSide, nil, nil); exit != nil {
		return *exit, nil
	}
	return v1beta1helper.UpdatedConditionWithClock(clk, current, gardencorev1beta1.ConditionTrue, "SystemComponentsRunning", "All system components are healthy."), nil
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
