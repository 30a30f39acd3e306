// Command coffer-vcsim runs govmomi's vSphere simulator for coffer's
// conformance tests (tests/vcsim.rs). It listens on 127.0.0.1 with TLS and
// prints one JSON line: the SDK URL, the credentials, the SHA-256
// thumbprint of the server certificate and the CA that signed it (PEM). It exits when its standard input
// closes, so a test that dies takes the simulator with it.
//
// The simulator lacks what a backup tool needs most, so this harness adds it:
//   - every VM disk gets a real VMDK descriptor and a sparse flat extent of a
//     few MiB holding some non-zero data;
//   - while change tracking is enabled, each CreateSnapshot first "writes" a
//     64 KiB extent to each disk (as a guest would between two backups), then
//     gives the disk a new change id "<disk uuid>/<sequence>";
//   - QueryChangedDiskAreas answers from that history: "*" gives the
//     allocated areas, a change id gives what was written after it;
//   - RetrievePropertiesEx answers at most -page-objects objects at a time
//     (the simulator ignores maxObjects), the rest through
//     ContinueRetrievePropertiesEx and a token, as a large vCenter does;
//   - with -independent-disk, the first VM gets a second disk in mode
//     independent_persistent, added through the simulator's own
//     ReconfigVM_Task as `govc vm.disk.create -mode independent_persistent`
//     adds one, and named in the JSON line ("independent_disk").
//
// Both are added by wrapping simulator.VirtualMachine (simulator.Map.Put of a
// type embedding it). Parts of the simulator assert that the registry holds a
// *simulator.VirtualMachine (snapshot create and remove), so those two calls
// put the plain object back while the simulator's own code runs.
//
// Build: scripts/install-vcsim.sh (Debian's govmomi 0.24, GOPATH, no modules).
package main

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"flag"
	"fmt"
	"log"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vmware/govmomi"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

const (
	mib         = int64(1024 * 1024)
	writeLength = 64 * 1024
)

// extent is a byte range of a disk written at a change sequence.
type extent struct {
	seq    int
	start  int64
	length int64
}

// diskHistory is what the harness knows of one disk: its flat file and every
// extent ever written to it (seq 0 is the initial content).
type diskHistory struct {
	uuid     string
	flatPath string
	capacity int64
	seq      int
	written  []extent
}

var (
	historyMu sync.Mutex
	// keyed by VM moref value and device key
	history = map[string]map[int32]*diskHistory{}
)

// The wrappers embed by value: the simulator's property collector digs the
// managed object out of a wrapper through embedded structs, not pointers.
// The wrapper takes the place of the original, which is no longer used.
type cbtVM struct {
	simulator.VirtualMachine
}

type cbtSnapshot struct {
	simulator.VirtualMachineSnapshot
}

// pagingCollector is each session's PropertyCollector (the simulator makes
// one per session from the registered type, zero-valued).
type pagingCollector struct {
	simulator.PropertyCollector
	mu      sync.Mutex
	pending map[string][]types.ObjectContent
	tokens  int
}

var pageObjects = 1

func main() {
	flavor := flag.String("flavor", "esx", "esx (a standalone host) or vpx (vCenter)")
	diskMiB := flag.Int64("disk-mib", 4, "size of every VM disk in MiB")
	flag.IntVar(&pageObjects, "page-objects", 1, "most objects in one RetrievePropertiesEx answer")
	datacenters := flag.Int("datacenters", 1, "datacenters of a vCenter (vpx), each with its hosts, datastore and VMs")
	independentDisk := flag.Bool("independent-disk", false, "give the first VM a second disk in mode independent_persistent")
	pools := flag.Int("pool", 0, "child resource pools below each cluster's root pool (vpx; the simulator names them <cluster>_RP1, …)")
	vmFolder := flag.String("vm-folder", "", "a VM folder of this name in each datacenter's VM folder, made through Folder.CreateFolder")
	flag.Parse()

	var model *simulator.Model
	switch *flavor {
	case "esx":
		model = simulator.ESX()
	case "vpx":
		model = simulator.VPX()
		model.Datacenter = *datacenters
		model.Pool = *pools
	default:
		log.Fatalf("unknown flavor %q (esx or vpx)", *flavor)
	}
	defer model.Remove()
	if err := model.Create(); err != nil {
		log.Fatal(err)
	}
	// The simulator's built-in certificate has a 1024-bit RSA key, which
	// rustls rightly refuses; serve one from a CA of our own instead.
	cert, caPEM, err := makeCertificate()
	if err != nil {
		log.Fatal(err)
	}
	model.Service.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	// A user of our own: with the default one the simulator accepts any password.
	secret := make([]byte, 12)
	if _, err := rand.Read(secret); err != nil {
		log.Fatal(err)
	}
	login := url.UserPassword("coffer", hex.EncodeToString(secret))
	model.Service.Listen = &url.URL{Host: "127.0.0.1:0", User: login}
	server := model.Service.NewServer()
	defer server.Close()

	pcRef := model.ServiceContent.PropertyCollector
	if pc, ok := simulator.Map.Get(pcRef).(*simulator.PropertyCollector); ok {
		simulator.Map.Put(&pagingCollector{PropertyCollector: *pc})
	} else {
		log.Fatalf("no property collector %v", pcRef)
	}
	if *vmFolder != "" {
		if err := makeVMFolders(server.URL, *vmFolder); err != nil {
			log.Fatal(err)
		}
	}
	var independent map[string]interface{}
	if *independentDisk {
		vm := simulator.Map.All("VirtualMachine")[0].(*simulator.VirtualMachine)
		key, file, err := addIndependentDisk(server.URL, vm.Self, *diskMiB*mib)
		if err != nil {
			log.Fatal(err)
		}
		independent = map[string]interface{}{"vm": vm.Name, "key": key, "file": file}
	}
	for _, entity := range simulator.Map.All("VirtualMachine") {
		vm := entity.(*simulator.VirtualMachine)
		if err := writeDisks(vm, *diskMiB*mib); err != nil {
			log.Fatal(err)
		}
		simulator.Map.Put(&cbtVM{*vm})
	}

	sum := sha256.Sum256(server.Certificate().Raw)
	hexes := make([]string, len(sum))
	for i, b := range sum {
		hexes[i] = fmt.Sprintf("%02X", b)
	}
	u := *server.URL
	u.User = nil
	password, _ := login.Password()
	// Where each datastore keeps its files, so tests can compare restored
	// bytes with the flat files themselves; and the datacenter's name, the
	// dcPath of datastore HTTP URLs.
	datastores := map[string]string{}
	for _, entity := range simulator.Map.All("Datastore") {
		ds := entity.(*simulator.Datastore)
		datastores[ds.Name] = ds.Info.GetDatastoreInfo().Url
	}
	datacenter := ""
	for _, entity := range simulator.Map.All("Datacenter") {
		datacenter = entity.(*simulator.Datacenter).Name
	}
	line, _ := json.Marshal(map[string]interface{}{
		"url":              u.String(),
		"username":         login.Username(),
		"password":         password,
		"thumbprint":       "sha256:" + strings.Join(hexes, ":"),
		"ca":               string(caPEM),
		"flavor":           *flavor,
		"datastores":       datastores,
		"datacenter":       datacenter,
		"independent_disk": independent,
	})
	fmt.Println(string(line))

	// Serve until the parent closes our standard input.
	_, _ = bufio.NewReader(os.Stdin).ReadString(0)
}

// makeVMFolders makes a folder called name in each datacenter's VM folder
// through the simulator's SOAP endpoint (Folder.CreateFolder), as govc's
// folder.create does.
func makeVMFolders(u *url.URL, name string) error {
	ctx := context.Background()
	c, err := govmomi.NewClient(ctx, u, true)
	if err != nil {
		return err
	}
	defer func() { _ = c.Logout(ctx) }()
	for _, entity := range simulator.Map.All("Datacenter") {
		dc := entity.(*simulator.Datacenter)
		if _, err := object.NewFolder(c.Client, dc.VmFolder).CreateFolder(ctx, name); err != nil {
			return err
		}
	}
	return nil
}

// addIndependentDisk adds a disk of capacity bytes in mode
// independent_persistent to the VM, beside its first disk, through the
// simulator's SOAP endpoint (ReconfigVM_Task, a deviceChange "add" with
// fileOperation "create"), as govc's vm.disk.create does. It answers the new
// disk's device key and file name as the simulator then reports them.
func addIndependentDisk(u *url.URL, ref types.ManagedObjectReference, capacity int64) (int32, string, error) {
	ctx := context.Background()
	c, err := govmomi.NewClient(ctx, u, true)
	if err != nil {
		return 0, "", err
	}
	defer func() { _ = c.Logout(ctx) }()
	vm := object.NewVirtualMachine(c.Client, ref)
	devices, err := vm.Device(ctx)
	if err != nil {
		return 0, "", err
	}
	controller, err := devices.FindDiskController("")
	if err != nil {
		return 0, "", err
	}
	disks := devices.SelectByType((*types.VirtualDisk)(nil))
	if len(disks) == 0 {
		return 0, "", fmt.Errorf("VM %s has no disk", ref.Value)
	}
	first := disks[0].(*types.VirtualDisk).Backing.(*types.VirtualDiskFlatVer2BackingInfo)
	var at object.DatastorePath
	at.FromString(first.FileName)
	at.Path = filepath.Join(filepath.Dir(at.Path), "independent.vmdk")
	disk := devices.CreateDisk(controller, *first.Datastore, at.String())
	disk.CapacityInKB = capacity / 1024
	disk.Backing.(*types.VirtualDiskFlatVer2BackingInfo).DiskMode = string(types.VirtualDiskModeIndependent_persistent)
	if err := vm.AddDevice(ctx, disk); err != nil {
		return 0, "", err
	}
	devices, err = vm.Device(ctx)
	if err != nil {
		return 0, "", err
	}
	for _, d := range devices.SelectByType((*types.VirtualDisk)(nil)) {
		b := d.(*types.VirtualDisk).Backing.(*types.VirtualDiskFlatVer2BackingInfo)
		if b.DiskMode == string(types.VirtualDiskModeIndependent_persistent) {
			return d.GetVirtualDevice().Key, b.FileName, nil
		}
	}
	return 0, "", fmt.Errorf("the simulator kept no independent disk on VM %s", ref.Value)
}

// makeCertificate makes a throw-away CA and a certificate it signs for
// 127.0.0.1, both ECDSA P-256.
func makeCertificate() (tls.Certificate, []byte, error) {
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	caTemplate := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "coffer vcsim test CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTemplate, caTemplate, &caKey.PublicKey, caKey)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	leafTemplate := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		DNSNames:     []string{"localhost"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTemplate, ca, &key.PublicKey, caKey)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	return tls.Certificate{Certificate: [][]byte{leafDER}, PrivateKey: key}, caPEM, nil
}

// writeDisks gives each disk of vm a descriptor and a sparse flat extent with
// data in its first 64 KiB and at 2 MiB.
func writeDisks(vm *simulator.VirtualMachine, capacity int64) error {
	disks := map[int32]*diskHistory{}
	for _, dev := range vm.Config.Hardware.Device {
		disk, ok := dev.(*types.VirtualDisk)
		if !ok {
			continue
		}
		backing := disk.Backing.(*types.VirtualDiskFlatVer2BackingInfo)
		descPath, err := datastoreFile(backing.FileName, vm.Datastore)
		if err != nil {
			return err
		}
		flatPath := strings.TrimSuffix(descPath, ".vmdk") + "-flat.vmdk"
		disk.CapacityInKB = capacity / 1024
		disk.CapacityInBytes = capacity
		h := &diskHistory{
			uuid:     diskUUID(vm.Config.Uuid, disk.Key),
			flatPath: flatPath,
			capacity: capacity,
		}
		descriptor := fmt.Sprintf("# Disk DescriptorFile\nversion=1\nencoding=\"UTF-8\"\nCID=fffffffe\n"+
			"parentCID=ffffffff\ncreateType=\"vmfs\"\n\n# Extent description\nRW %d VMFS \"%s\"\n\n"+
			"# The Disk Data Base\n#DDB\n\nddb.adapterType = \"pvscsi\"\nddb.virtualHWVersion = \"13\"\n",
			capacity/512, filepath.Base(flatPath))
		if err := os.WriteFile(descPath, []byte(descriptor), 0o644); err != nil {
			return err
		}
		f, err := os.Create(flatPath)
		if err != nil {
			return err
		}
		if err := f.Truncate(capacity); err != nil {
			return err
		}
		_ = f.Close()
		for _, start := range []int64{0, 2 * mib} {
			if start+writeLength <= capacity {
				if err := h.write(extent{seq: 0, start: start, length: writeLength}); err != nil {
					return err
				}
			}
		}
		disks[disk.Key] = h
	}
	historyMu.Lock()
	history[vm.Self.Value] = disks
	historyMu.Unlock()
	return nil
}

// diskUUID spells a disk's identity the way ESXi prefixes change ids:
// "52 0f … 3c-9a … 01", derived from the VM's UUID and the device key.
func diskUUID(vmUUID string, key int32) string {
	hexDigits := strings.ReplaceAll(vmUUID, "-", "")
	var pairs []string
	for i := 2; i+2 <= len(hexDigits) && len(pairs) < 15; i += 2 {
		pairs = append(pairs, hexDigits[i:i+2])
	}
	pairs = append([]string{"52"}, pairs...)
	pairs[15] = fmt.Sprintf("%02x", key%256)
	return strings.Join(pairs[:8], " ") + "-" + strings.Join(pairs[8:], " ")
}

// datastoreFile maps "[ds] dir/file.vmdk" to the file inside the datastore's directory.
// Two datacenters may each have a datastore of one name: the VM's own
// datastores (`of`) decide which.
func datastoreFile(name string, of []types.ManagedObjectReference) (string, error) {
	end := strings.Index(name, "]")
	if !strings.HasPrefix(name, "[") || end < 0 {
		return "", fmt.Errorf("not a datastore path: %q", name)
	}
	dsName, rel := name[1:end], strings.TrimSpace(name[end+1:])
	for _, entity := range simulator.Map.All("Datastore") {
		ds := entity.(*simulator.Datastore)
		mine := len(of) == 0
		for _, ref := range of {
			mine = mine || ref == ds.Self
		}
		if ds.Name == dsName && mine {
			return filepath.Join(ds.Info.GetDatastoreInfo().Url, rel), nil
		}
	}
	return "", fmt.Errorf("no datastore %q", dsName)
}

// write fills the extent with a byte derived from its sequence and records it.
func (h *diskHistory) write(e extent) error {
	f, err := os.OpenFile(h.flatPath, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	buf := make([]byte, e.length)
	for i := range buf {
		buf[i] = byte(0xA0 + e.seq%16)
	}
	if _, err := f.WriteAt(buf, e.start); err != nil {
		return err
	}
	h.written = append(h.written, e)
	return nil
}

func (h *diskHistory) changeID() string {
	return fmt.Sprintf("%s/%d", h.uuid, h.seq)
}

// withPlainObjects runs f while the registry holds the simulator's own
// objects, which its snapshot code type-asserts.
func withPlainObjects(vm *cbtVM, snap *cbtSnapshot, f func()) {
	simulator.Map.Put(&vm.VirtualMachine)
	if snap != nil {
		simulator.Map.Put(&snap.VirtualMachineSnapshot)
	}
	defer func() {
		simulator.Map.Put(vm)
		if snap != nil && simulator.Map.Get(snap.Self) != nil {
			simulator.Map.Put(snap)
		}
	}()
	f()
}

// CreateSnapshotTask simulates guest writes, advances the change ids of every
// disk when change tracking is on, then takes the snapshot.
func (vm *cbtVM) CreateSnapshotTask(req *types.CreateSnapshot_Task) soap.HasFault {
	if vm.Config.ChangeTrackingEnabled != nil && *vm.Config.ChangeTrackingEnabled {
		historyMu.Lock()
		// A fresh device slice: earlier snapshots keep the disks they saw.
		devices := make([]types.BaseVirtualDevice, len(vm.Config.Hardware.Device))
		for i, dev := range vm.Config.Hardware.Device {
			devices[i] = dev
			disk, ok := dev.(*types.VirtualDisk)
			if !ok || history[vm.Self.Value][disk.Key] == nil {
				continue
			}
			h := history[vm.Self.Value][disk.Key]
			h.seq++
			slots := h.capacity / writeLength
			start := ((int64(h.seq)*16 + 2) % slots) * writeLength
			if err := h.write(extent{seq: h.seq, start: start, length: writeLength}); err != nil {
				log.Print(err)
			}
			backing := *disk.Backing.(*types.VirtualDiskFlatVer2BackingInfo)
			backing.ChangeId = h.changeID()
			copied := *disk
			copied.Backing = &backing
			devices[i] = &copied
		}
		vm.Config.Hardware.Device = devices
		historyMu.Unlock()
	}
	var res soap.HasFault
	withPlainObjects(vm, nil, func() {
		res = vm.VirtualMachine.CreateSnapshotTask(req)
	})
	if vm.Snapshot != nil && vm.Snapshot.CurrentSnapshot != nil {
		if snap, ok := simulator.Map.Get(*vm.Snapshot.CurrentSnapshot).(*simulator.VirtualMachineSnapshot); ok {
			simulator.Map.Put(&cbtSnapshot{*snap})
		}
	}
	return res
}

func (s *cbtSnapshot) RemoveSnapshotTask(ctx *simulator.Context, req *types.RemoveSnapshot_Task) soap.HasFault {
	vm := simulator.Map.Get(s.Vm).(*cbtVM)
	var res soap.HasFault
	withPlainObjects(vm, s, func() {
		res = s.VirtualMachineSnapshot.RemoveSnapshotTask(ctx, req)
	})
	return res
}

// QueryChangedDiskAreas answers from the write history of the disk as it was
// when the snapshot was taken.
func (vm *cbtVM) QueryChangedDiskAreas(req *types.QueryChangedDiskAreas) soap.HasFault {
	body := &methods.QueryChangedDiskAreasBody{}
	fail := func(msg string, fault types.BaseMethodFault) soap.HasFault {
		body.Fault_ = simulator.Fault(msg, fault)
		return body
	}
	if vm.Config.ChangeTrackingEnabled == nil || !*vm.Config.ChangeTrackingEnabled {
		return fail("change tracking is not enabled", &types.FileFault{File: vm.Config.Files.VmPathName})
	}
	if req.Snapshot == nil {
		return fail("a snapshot is required", &types.InvalidArgument{InvalidProperty: "snapshot"})
	}
	snap, ok := simulator.Map.Get(*req.Snapshot).(*cbtSnapshot)
	if !ok || snap.Vm != vm.Self {
		return fail("snapshot not found", &types.ManagedObjectNotFound{Obj: *req.Snapshot})
	}
	var snapDisk *types.VirtualDisk
	for _, dev := range snap.Config.Hardware.Device {
		if disk, ok := dev.(*types.VirtualDisk); ok && disk.Key == req.DeviceKey {
			snapDisk = disk
		}
	}
	historyMu.Lock()
	defer historyMu.Unlock()
	h := history[vm.Self.Value][req.DeviceKey]
	if snapDisk == nil || h == nil {
		return fail("no such disk", &types.InvalidArgument{InvalidProperty: "deviceKey"})
	}
	snapSeq, err := sequence(snapDisk.Backing.(*types.VirtualDiskFlatVer2BackingInfo).ChangeId, h.uuid)
	if err != nil {
		return fail("the snapshot has no change id", &types.FileFault{File: h.flatPath})
	}
	since := -1 // "*": everything allocated
	if req.ChangeId != "*" {
		since, err = sequence(req.ChangeId, h.uuid)
		if err != nil || since > snapSeq {
			return fail("invalid change id "+req.ChangeId, &types.InvalidArgument{InvalidProperty: "changeId"})
		}
	}
	if req.StartOffset < 0 || req.StartOffset >= h.capacity {
		return fail("start offset past the end of the disk", &types.InvalidArgument{InvalidProperty: "startOffset"})
	}
	info := types.DiskChangeInfo{StartOffset: req.StartOffset, Length: h.capacity - req.StartOffset}
	info.ChangedArea = changedAreas(h.written, since, snapSeq, req.StartOffset)
	body.Res = &types.QueryChangedDiskAreasResponse{Returnval: info}
	return body
}

// sequence reads the n of "<uuid>/<n>", which must name this disk.
func sequence(changeID, uuid string) (int, error) {
	i := strings.LastIndex(changeID, "/")
	if i < 0 || changeID[:i] != uuid {
		return 0, fmt.Errorf("change id %q is not of this disk", changeID)
	}
	return strconv.Atoi(changeID[i+1:])
}

// changedAreas merges the extents written in (since, upto] that end after
// start, in offset order.
func changedAreas(written []extent, since, upto int, start int64) []types.DiskChangeExtent {
	marks := make([]bool, 0)
	unit := int64(writeLength)
	for _, e := range written {
		if e.seq <= since || e.seq > upto || e.start+e.length <= start {
			continue
		}
		for off := e.start; off < e.start+e.length; off += unit {
			i := int(off / unit)
			for len(marks) <= i {
				marks = append(marks, false)
			}
			marks[i] = true
		}
	}
	var out []types.DiskChangeExtent
	for i, on := range marks {
		if !on {
			continue
		}
		off := int64(i) * unit
		if n := len(out); n > 0 && out[n-1].Start+out[n-1].Length == off {
			out[n-1].Length += unit
		} else {
			out = append(out, types.DiskChangeExtent{Start: off, Length: unit})
		}
	}
	return out
}

// RetrievePropertiesEx answers one page and keeps the rest for
// ContinueRetrievePropertiesEx.
func (pc *pagingCollector) RetrievePropertiesEx(ctx *simulator.Context, req *types.RetrievePropertiesEx) soap.HasFault {
	res := pc.PropertyCollector.RetrievePropertiesEx(ctx, req)
	body, ok := res.(*methods.RetrievePropertiesExBody)
	if !ok || body.Res == nil || body.Res.Returnval == nil {
		return res
	}
	limit := pageObjects
	if max := int(req.Options.MaxObjects); max > 0 && max < limit {
		limit = max
	}
	body.Res.Returnval = pc.page(body.Res.Returnval.Objects, limit)
	return body
}

func (pc *pagingCollector) ContinueRetrievePropertiesEx(req *types.ContinueRetrievePropertiesEx) soap.HasFault {
	body := &methods.ContinueRetrievePropertiesExBody{}
	pc.mu.Lock()
	rest, ok := pc.pending[req.Token]
	delete(pc.pending, req.Token)
	pc.mu.Unlock()
	if !ok {
		body.Fault_ = simulator.Fault("unknown token", &types.InvalidArgument{InvalidProperty: "token"})
		return body
	}
	body.Res = &types.ContinueRetrievePropertiesExResponse{Returnval: *pc.page(rest, pageObjects)}
	return body
}

func (pc *pagingCollector) page(objects []types.ObjectContent, limit int) *types.RetrieveResult {
	if limit <= 0 || len(objects) <= limit {
		return &types.RetrieveResult{Objects: objects}
	}
	pc.mu.Lock()
	defer pc.mu.Unlock()
	if pc.pending == nil {
		pc.pending = map[string][]types.ObjectContent{}
	}
	pc.tokens++
	token := fmt.Sprintf("page-%d", pc.tokens)
	pc.pending[token] = objects[limit:]
	return &types.RetrieveResult{Token: token, Objects: objects[:limit]}
}
