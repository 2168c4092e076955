#include "picture_decoding.h"

#include <stdio.h>  /* before jpeglib.h, which uses FILE */

#include <jpeglib.h>
#include <jerror.h>
#include <png.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>

struct jpeg_failure {
    struct jpeg_error_mgr manager;
    jmp_buf jump;
    char message[JMSG_LENGTH_MAX];
};

static void jpeg_fail(j_common_ptr info) {
    struct jpeg_failure *failure = (struct jpeg_failure *)info->err;
    (*info->err->format_message)(info, failure->message);
    longjmp(failure->jump, 1);
}

/// Warnings stay quiet, except a file that ends early: Pillow refuses it ("image file is truncated").
static void jpeg_warn(j_common_ptr info, int level) {
    if (level == -1 && info->err->msg_code == JWRN_JPEG_EOF) jpeg_fail(info);
}

static unsigned read16(const uint8_t *p, int little) { return little ? p[0] | p[1] << 8 : p[0] << 8 | p[1]; }

static uint64_t read32(const uint8_t *p, int little) {
    return little ? (uint64_t)p[0] | (uint64_t)p[1] << 8 | (uint64_t)p[2] << 16 | (uint64_t)p[3] << 24
                  : (uint64_t)p[0] << 24 | (uint64_t)p[1] << 16 | (uint64_t)p[2] << 8 | (uint64_t)p[3];
}

/// The Orientation tag (0x0112) of IFD0 in an APP1 "Exif" segment; 0 when the segment is not Exif, 1 when the tag
/// is absent or unreadable.
static int exif_orientation(const uint8_t *data, unsigned length) {
    if (length < 6 || memcmp(data, "Exif\0\0", 6) != 0) return 0;
    const uint8_t *tiff = data + 6;
    uint64_t size = length - 6;
    if (size < 8 || !(tiff[0] == 'I' || tiff[0] == 'M')) return 1;
    int little = tiff[0] == 'I';
    uint64_t ifd = read32(tiff + 4, little);
    if (ifd + 2 > size) return 1;
    unsigned entries = read16(tiff + ifd, little);
    for (unsigned i = 0; i < entries; i++) {
        uint64_t entry = ifd + 2 + 12 * (uint64_t)i;
        if (entry + 12 > size) return 1;
        if (read16(tiff + entry, little) == 0x0112) {
            unsigned value = read16(tiff + entry + 8, little);
            return value >= 1 && value <= 8 ? (int)value : 1;
        }
    }
    return 1;
}

static int too_large(pd_picture *picture, uint64_t width, uint64_t height, char *error, size_t error_size) {
    if (width * height <= (uint64_t)PD_MAX_PIXELS) return 0;
    snprintf(error, error_size, "has more than %ld million pixels; downscale it", PD_MAX_PIXELS / 1000000);
    picture->width = (int)width;
    picture->height = (int)height;
    return 1;
}

/// Pillow's luma (ITU-R 601-2, `convert("L")`), as 0/255 for nonzero.
static void keep_nonzero(uint8_t *rgb, size_t pixels) {
    for (size_t i = 0; i < pixels; i++) {
        uint8_t *p = rgb + 3 * i;
        unsigned luma = (p[0] * 19595u + p[1] * 38470u + p[2] * 7471u + 0x8000u) >> 16;
        p[0] = p[1] = p[2] = luma ? 255 : 0;
    }
}

static int decode_jpeg(FILE *file, int nonzero, pd_picture *picture, char *error, size_t error_size) {
    struct jpeg_decompress_struct info;
    struct jpeg_failure failure;
    info.err = jpeg_std_error(&failure.manager);
    failure.manager.error_exit = jpeg_fail;
    failure.manager.emit_message = jpeg_warn;
    if (setjmp(failure.jump)) {
        snprintf(error, error_size, "not a readable JPEG (%s)", failure.message);
        jpeg_destroy_decompress(&info);
        free(picture->rgb);
        picture->rgb = NULL;
        return PD_FAILED;
    }
    jpeg_create_decompress(&info);
    jpeg_stdio_src(&info, file);
    jpeg_save_markers(&info, JPEG_APP0 + 1, 0xFFFF);
    jpeg_read_header(&info, TRUE);
    picture->orientation = 1;
    for (jpeg_saved_marker_ptr marker = info.marker_list; marker; marker = marker->next) {
        int found = marker->marker == JPEG_APP0 + 1 ? exif_orientation(marker->data, marker->data_length) : 0;
        if (found) picture->orientation = found;  /* an XMP APP1 after the Exif one leaves it alone */
    }
    if (too_large(picture, info.image_width, info.image_height, error, error_size)) {
        jpeg_destroy_decompress(&info);
        return PD_TOO_LARGE;
    }
    info.out_color_space = JCS_RGB;  /* greyscale and YCbCr alike, as Pillow's convert("RGB") */
    jpeg_start_decompress(&info);
    picture->width = (int)info.output_width;
    picture->height = (int)info.output_height;
    size_t row = (size_t)info.output_width * 3;
    picture->rgb = malloc(row * info.output_height);
    if (!picture->rgb) {
        snprintf(error, error_size, "out of memory for a %dx%d picture", picture->width, picture->height);
        jpeg_destroy_decompress(&info);
        return PD_FAILED;
    }
    while (info.output_scanline < info.output_height) {
        JSAMPROW line = picture->rgb + row * info.output_scanline;
        jpeg_read_scanlines(&info, &line, 1);
    }
    jpeg_finish_decompress(&info);
    jpeg_destroy_decompress(&info);
    if (nonzero) keep_nonzero(picture->rgb, (size_t)picture->width * picture->height);
    return PD_OK;
}

struct png_failure {
    char message[200];
};

static void png_fail(png_structp png, png_const_charp message) {
    struct png_failure *failure = png_get_error_ptr(png);
    snprintf(failure->message, sizeof failure->message, "%s", message);
    png_longjmp(png, 1);
}

static void png_quiet(png_structp png, png_const_charp message) { (void)png; (void)message; }

/// Release what a failed PNG decode holds; PD_FAILED.
static int png_abandon(png_structp *png, png_infop *info, png_bytep *rows, uint16_t *wide, pd_picture *picture) {
    png_destroy_read_struct(png, info, NULL);
    free(rows);
    free(wide);
    free(picture->rgb);
    picture->rgb = NULL;
    return PD_FAILED;
}

static int decode_png(FILE *file, int nonzero, pd_picture *picture, char *error, size_t error_size) {
    struct png_failure failure = {{0}};
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &failure, png_fail, png_quiet);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    png_bytep *volatile rows = NULL;
    uint16_t *volatile wide = NULL;
    if (!info) {
        snprintf(error, error_size, "libpng could not start");
        png_destroy_read_struct(&png, NULL, NULL);
        return PD_FAILED;
    }
    if (setjmp(png_jmpbuf(png))) {
        snprintf(error, error_size, "not a readable PNG (%s)", failure.message);
        return png_abandon(&png, &info, rows, wide, picture);
    }
    png_init_io(png, file);
    png_read_info(png, info);
    png_uint_32 width = png_get_image_width(png, info), height = png_get_image_height(png, info);
    if (too_large(picture, width, height, error, error_size)) {
        png_destroy_read_struct(&png, &info, NULL);
        return PD_TOO_LARGE;
    }
    int type = png_get_color_type(png, info), depth = png_get_bit_depth(png, info);
    int grey = type == PNG_COLOR_TYPE_GRAY || type == PNG_COLOR_TYPE_GRAY_ALPHA;
    /* A 16-bit grey mask keeps its raw samples: a label map's 1 is the object (Pillow's mode I;16). */
    int raw16 = nonzero && grey && depth == 16;
    png_set_expand(png);  /* palette to RGB, grey below 8 bits to 8, tRNS to alpha */
    png_set_strip_alpha(png);
    if (raw16) {
        png_set_swap(png);  /* host order (little endian here) for the uint16_t reads below */
    } else if (grey) {
        png_set_scale_16(png);  /* Pillow's I;16 scaled by 1/257 in the Python runtime */
        png_set_gray_to_rgb(png);
    } else {
        png_set_strip_16(png);  /* Pillow reads 16-bit colour by its high byte */
    }
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
    size_t channels = raw16 ? 1 : 3, sample = raw16 ? 2 : 1, row = (size_t)width * channels * sample;
    picture->width = (int)width;
    picture->height = (int)height;
    picture->orientation = 1;
    picture->rgb = malloc((size_t)width * height * 3);
    wide = raw16 ? malloc(row * height) : NULL;
    rows = malloc(sizeof(png_bytep) * height);
    if (!picture->rgb || !rows || (raw16 && !wide) || png_get_rowbytes(png, info) != row) {
        snprintf(error, error_size, "cannot hold a %ux%u picture", (unsigned)width, (unsigned)height);
        return png_abandon(&png, &info, rows, wide, picture);
    }
    uint8_t *target = raw16 ? (uint8_t *)wide : picture->rgb;
    for (png_uint_32 y = 0; y < height; y++) rows[y] = target + row * y;
    png_read_image(png, rows);
    png_read_end(png, NULL);
    png_destroy_read_struct(&png, &info, NULL);
    free(rows);
    size_t pixels = (size_t)width * height;
    if (raw16) {
        for (size_t i = 0; i < pixels; i++) memset(picture->rgb + 3 * i, wide[i] ? 255 : 0, 3);
        free(wide);
    } else if (nonzero) {
        keep_nonzero(picture->rgb, pixels);
    }
    return PD_OK;
}

int pd_decode(const char *path, int nonzero, pd_picture *picture, char *error, size_t error_size) {
    memset(picture, 0, sizeof *picture);
    FILE *file = fopen(path, "rb");
    if (!file) {
        snprintf(error, error_size, "cannot open it");
        return PD_FAILED;
    }
    uint8_t magic[8] = {0};
    size_t got = fread(magic, 1, sizeof magic, file);
    rewind(file);
    int status;
    if (got >= 3 && magic[0] == 0xFF && magic[1] == 0xD8 && magic[2] == 0xFF) {
        status = decode_jpeg(file, nonzero, picture, error, error_size);
    } else if (got == 8 && png_sig_cmp(magic, 0, 8) == 0) {
        status = decode_png(file, nonzero, picture, error, error_size);
    } else {
        snprintf(error, error_size, "not a JPEG or PNG picture");
        status = PD_FAILED;
    }
    fclose(file);
    return status;
}

void pd_free(pd_picture *picture) {
    free(picture->rgb);
    picture->rgb = NULL;
}
