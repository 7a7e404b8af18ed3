/* The pod sandbox's process (the "pause" container): holds the pod's namespaces, reaps
 * orphaned children, and exits on SIGTERM/SIGINT. Built static with musl-gcc by
 * sandbox/scripts/build-node.sh into a FROM-scratch image. */
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile sig_atomic_t stop;

static void on_term(int sig) { (void)sig; stop = 1; }

static void on_child(int sig) {
    (void)sig;
    while (waitpid(-1, 0, WNOHANG) > 0) {
    }
}

int main(void) {
    struct sigaction term = {.sa_handler = on_term};
    struct sigaction child = {.sa_handler = on_child, .sa_flags = SA_NOCLDSTOP | SA_RESTART};
    sigaction(SIGTERM, &term, 0);
    sigaction(SIGINT, &term, 0);
    sigaction(SIGCHLD, &child, 0);
    /* Block the stop signals outside sigsuspend, so one arriving between the check and
     * the wait is not lost. */
    sigset_t block, wait_mask;
    sigemptyset(&block);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGINT);
    sigprocmask(SIG_BLOCK, &block, &wait_mask);
    sigdelset(&wait_mask, SIGTERM);
    sigdelset(&wait_mask, SIGINT);
    while (!stop)
        sigsuspend(&wait_mask);
    return 0;
}
