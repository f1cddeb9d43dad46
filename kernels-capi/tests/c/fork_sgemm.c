/* Products in a process that forks: the parent runs products (its GEMM helper threads then
 * spinning, or parked after a pause), forks, and the child, which has none of the parent's
 * threads, runs products of every kind (threaded, small, one-column) and checks them. A child
 * that hangs is killed by its alarm; the parent reports "N passed, M failed". */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "products.h"

int main(void)
{
    int passed = 0, failed = 0;
    for (int pause = 0; pause < 2; pause++) {
        if (all_kinds()) passed++; else failed++;
        /* Helpers spinning (no pause) or parked (a pause far beyond their spin). */
        if (pause) usleep(50000);
        if (all_kinds_in_a_child()) {
            passed++;
        } else {
            failed++;
            printf("child after %s: hung, crashed or wrong\n", pause ? "a pause" : "products");
        }
        /* And the parent goes on working. */
        if (all_kinds()) passed++; else failed++;
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
