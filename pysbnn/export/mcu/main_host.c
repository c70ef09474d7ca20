/* Test driver for an exported model on the build host (stdio).
 *
 * usage: prog IMAGES.bin   (raw uint8, MODEL_INPUTS bytes per image)
 * Prints "N <count>", one line per image, then "DONE" to stdout. A line is
 * the prediction; built with -DMODEL_LOGITS=<name>_logits and
 * -DMODEL_CLASSES=<n> it is followed by the n logits ("%.9g": exact float).
 * Exit codes: 1 usage, 3 cannot open, 4 size not a multiple of MODEL_INPUTS,
 * 5 read error (the same numbers as main_mcu.c where they apply).
 */
#include <stdint.h>
#include <stdio.h>

#ifndef MODEL_PREDICT
#define MODEL_PREDICT model_predict
#endif
#ifndef MODEL_INPUTS
#define MODEL_INPUTS 784u
#endif
#define IMAGE_BYTES MODEL_INPUTS

int MODEL_PREDICT(const uint8_t *image);
#ifdef MODEL_LOGITS
void MODEL_LOGITS(const uint8_t *image, float *logits);
#endif

static void print_result(const uint8_t *image)
{
#ifdef MODEL_LOGITS
    float logits[MODEL_CLASSES];
    int c;
    printf("%d", MODEL_PREDICT(image));
    MODEL_LOGITS(image, logits);
    for (c = 0; c < MODEL_CLASSES; c++) {
        printf(" %.9g", (double)logits[c]);
    }
    printf("\n");
#else
    printf("%d\n", MODEL_PREDICT(image));
#endif
}

int main(int argc, char **argv)
{
    static uint8_t image[IMAGE_BYTES];
    FILE *f;
    long len;
    unsigned long n, i;

    if (argc != 2) {
        fprintf(stderr, "usage: %s IMAGES.bin\n", argv[0]);
        return 1;
    }
    f = fopen(argv[1], "rb");
    if (f == NULL) {
        fprintf(stderr, "ERROR cannot open %s\n", argv[1]);
        return 3;
    }
    if (fseek(f, 0, SEEK_END) != 0 || (len = ftell(f)) < 0 ||
        fseek(f, 0, SEEK_SET) != 0 || (unsigned long)len % IMAGE_BYTES != 0) {
        fprintf(stderr, "ERROR %s: size is not a multiple of the image size\n", argv[1]);
        fclose(f);
        return 4;
    }
    n = (unsigned long)len / IMAGE_BYTES;
    printf("N %lu\n", n);
    for (i = 0; i < n; i++) {
        if (fread(image, 1, IMAGE_BYTES, f) != IMAGE_BYTES) {
            fprintf(stderr, "ERROR short read at image %lu\n", i);
            fclose(f);
            return 5;
        }
        print_result(image);
    }
    fclose(f);
    printf("DONE\n");
    return ferror(stdout) ? 5 : 0;
}
