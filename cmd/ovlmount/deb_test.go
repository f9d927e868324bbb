package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ovlmount/ovlmount/internal/testenv"
	"golang.org/x/sys/unix"
)

// requireDebian skips the test, or fails it with CI=true, unless the
// Debian tools it needs are here and no ovlmount package is installed
// that the test would replace and then remove.
func requireDebian(t *testing.T) {
	t.Helper()
	var missing []string
	for _, tool := range []string{"dpkg-deb", "dpkg-query", "apt-get", "man", "mount.fuse3", "make"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	msg := ""
	if len(missing) > 0 {
		msg = "the Debian package test needs " + strings.Join(missing, ", ")
	} else if debInstalled(t) {
		msg = "an ovlmount package is installed; the Debian package test would replace and then remove it"
	}
	if msg == "" {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal(msg + " (CI=true: failing instead of skipping)")
	}
	t.Skip(msg)
}

// debInstalled reports whether dpkg knows an ovlmount package, installed
// or with files left.
func debInstalled(t *testing.T) bool {
	t.Helper()
	out, err := exec.Command("dpkg-query", "-W", "-f=${db:Status-Abbrev}", "ovlmount").Output()
	return err == nil && strings.TrimSpace(string(out)) != "un"
}

// apt runs apt-get with args, non-interactively, waiting for the dpkg
// lock (the podman test may be installing), and fails the test if it
// fails.
func apt(t *testing.T, args ...string) {
	t.Helper()
	cmd := exec.Command("apt-get", append([]string{"-y", "-q", "-o", "DPkg::Lock::Timeout=600"}, args...)...)
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("apt-get %q: %v\n%s", args, err, out)
	}
}

// TestDeb builds the Debian package with make deb, installs it with
// apt-get as on a fresh machine, mounts through mount -t fuse.ovlmount
// with the program it installed, reads man ovlmount, and removes it:
// every file it installed must be gone, and dpkg must have forgotten it.
func TestDeb(t *testing.T) {
	testenv.RequireMount(t)
	// privateMounts runs this test again for its subtest "mount"; the
	// package is built and installed once, by the first run.
	var deb string
	if os.Getenv(privateMountsEnv) == "" {
		requireDebian(t)
		release, _ := releaseAndCommit(t)
		arch, err := exec.Command("dpkg", "--print-architecture").Output()
		if err != nil {
			t.Fatal(err)
		}
		makeTarget(t, "deb")
		deb, err = filepath.Abs(fmt.Sprintf("../../bin/ovlmount_%s_%s.deb", release, strings.TrimSpace(string(arch))))
		if err != nil {
			t.Fatal(err)
		}
		fields, err := exec.Command("dpkg-deb", "--showformat=${Package} ${Version} ${Depends}", "--show", deb).Output()
		if err != nil {
			t.Fatalf("dpkg-deb --show %s: %v", deb, err)
		}
		if want := "ovlmount " + release + " fuse3"; string(fields) != want {
			t.Errorf("package fields %q, want %q", fields, want)
		}
		t.Cleanup(func() {
			if debInstalled(t) {
				apt(t, "purge", "ovlmount")
			}
		})
		apt(t, "install", deb)
		checkDebFiles(t)
		checkStamped(t, "/usr/bin/ovlmount")
	}

	t.Run("mount", func(t *testing.T) {
		if !privateMounts(t) {
			return
		}
		// Whatever make install or another build put in /usr/local is
		// hidden: only the package's program and man page are found.
		if err := unix.Mount("tmpfs", "/usr/local", "tmpfs", 0, "mode=755"); err != nil {
			t.Fatalf("mount a tmpfs on /usr/local: %v", err)
		}
		d := makeStack(t)
		mnt := d + "/mnt"
		cleanupMount(t, mnt)
		r := execute(t, "mount", "-t", "fuse.ovlmount", "ovlsrc", mnt, "-o",
			"lowerdir="+d+"/l1:"+d+"/l2,upperdir="+d+"/upper,workdir="+d+"/work")
		if r.code != 0 || r.stderr != "" {
			t.Fatalf("mount -t fuse.ovlmount: exit %d, stderr %q", r.code, r.stderr)
		}
		checkLive(t, d, mnt)
		pid := daemonFor(t, d+"/")
		checkExe(t, pid, "/usr/bin/ovlmount")
		if err := os.WriteFile(mnt+"/new", []byte("new"), 0o644); err != nil {
			t.Errorf("write through the mount: %v", err)
		}
		umount(t, mnt)
		checkDaemonEnds(t, pid, d+"/", mnt)
		if b, err := os.ReadFile(d + "/upper/new"); string(b) != "new" {
			t.Errorf("upper/new: %q, %v; want what was written", b, err)
		}

		if where, err := exec.Command("man", "-w", "ovlmount").Output(); err != nil || string(where) != "/usr/share/man/man8/ovlmount.8.gz\n" {
			t.Errorf("man -w ovlmount: %q, %v; want the package's page", where, err)
		}
		text, warnings := renderMan(t, "ovlmount")
		if warnings != "" {
			t.Errorf("man ovlmount warns:\n%s", warnings)
		}
		checkManText(t, text)
	})
	if os.Getenv(privateMountsEnv) != "" {
		return
	}

	// The package has no conffiles: remove leaves nothing, as purge does.
	files := debFiles(t)
	apt(t, "remove", "ovlmount")
	checkGone(t, "apt-get remove", files)
	apt(t, "install", deb)
	apt(t, "purge", "ovlmount")
	checkGone(t, "apt-get purge", files)
}

// debFiles returns the paths dpkg -L lists for the installed package.
func debFiles(t *testing.T) []string {
	t.Helper()
	out, err := exec.Command("dpkg", "-L", "ovlmount").Output()
	if err != nil {
		t.Fatalf("dpkg -L ovlmount: %v", err)
	}
	return strings.Fields(string(out))
}

// checkDebFiles checks what the package installed: the program, the man
// page, the copyright file with the licenses, and the documentation.
func checkDebFiles(t *testing.T) {
	t.Helper()
	files := debFiles(t)
	// Documentation over 4 kB is compressed, as Debian policy wants.
	for _, f := range []string{
		"/usr/bin/ovlmount", "/usr/share/man/man8/ovlmount.8.gz", "/usr/share/doc/ovlmount/copyright",
		"/usr/share/doc/ovlmount/README.md", "/usr/share/doc/ovlmount/docs/usage.md", "/usr/share/doc/ovlmount/docs/options.md",
	} {
		if !slices.Contains(files, f) && (strings.HasSuffix(f, ".gz") || !slices.Contains(files, f+".gz")) {
			t.Errorf("the package does not install %s:\n%s", f, strings.Join(files, "\n"))
		}
	}
	copyright, err := os.ReadFile("/usr/share/doc/ovlmount/copyright")
	if err != nil {
		t.Fatal(err)
	}
	license, err := os.ReadFile("../../LICENSE")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(copyright), string(license)) {
		t.Error("the copyright file lacks the text of LICENSE")
	}
	for _, m := range []string{"== Go standard library", "== golang.org/x/sys "} {
		if !strings.Contains(string(copyright), m) {
			t.Errorf("the copyright file has no license for %q", m)
		}
	}
}

// checkGone checks, after how removed the package, that dpkg forgot it
// and that the files it installed are gone, and its directories too
// unless another package owns them.
func checkGone(t *testing.T, how string, files []string) {
	t.Helper()
	if debInstalled(t) {
		t.Errorf("dpkg still knows the ovlmount package after %s", how)
	}
	if left, _ := filepath.Glob("/var/lib/dpkg/info/ovlmount.*"); len(left) != 0 {
		t.Errorf("dpkg's files of the package left after %s: %q", how, left)
	}
	for _, f := range files {
		if f == "/." {
			continue
		}
		fi, err := os.Lstat(f)
		switch {
		case os.IsNotExist(err):
		case err != nil:
			t.Error(err)
		case !fi.IsDir():
			t.Errorf("%s left after %s", f, how)
		default:
			if exec.Command("dpkg-query", "-S", f).Run() != nil {
				t.Errorf("directory %s left after %s, and no package owns it", f, how)
			}
		}
	}
}
