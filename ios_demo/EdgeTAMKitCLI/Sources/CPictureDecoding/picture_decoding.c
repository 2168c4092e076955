#include "picture_decoding.h"

#include <stdio.h>  /* before jpeglib.h, which uses FILE */

#include <jpeglib.h>
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

static void jpeg_quiet(j_common_ptr info, int level) { (void)info; (void)level; }

static unsigned read16(const uint8_t *p, int little) { return little ? p[0] | p[1] << 8 : p[0] << 8 | p[1]; }

static unsigned long read32(const uint8_t *p, int little) {
    return little ? (unsigned long)p[0] | (unsigned long)p[1] << 8 | (unsigned long)p[2] << 16 | (unsigned long)p[3] << 24
                  : (unsigned long)p[0] << 24 | (unsigned long)p[1] << 16 | (unsigned long)p[2] << 8 | (unsigned long)p[3];
}

/// The Orientation tag (0x0112) of IFD0 in an APP1 "Exif" segment, 1 when absent or unreadable.
static int exif_orientation(const uint8_t *data, unsigned length) {
    if (length < 14 || memcmp(data, "Exif\0\0", 6) != 0) return 1;
    const uint8_t *tiff = data + 6;
    unsigned size = length - 6;
    int little = tiff[0] == 'I';
    if (!(little || tiff[0] == 'M')) return 1;
    unsigned long ifd = read32(tiff + 4, little);
    if (ifd + 2 > size) return 1;
    unsigned entries = read16(tiff + ifd, little);
    for (unsigned i = 0; i < entries; i++) {
        unsigned long entry = ifd + 2 + 12ul * i;
        if (entry + 12 > size) return 1;
        if (read16(tiff + entry, little) == 0x0112) {
            unsigned value = read16(tiff + entry + 8, little);
            return value >= 1 && value <= 8 ? (int)value : 1;
        }
    }
    return 1;
}

static int decode_jpeg(FILE *file, pd_picture *picture, char *error, size_t error_size) {
    struct jpeg_decompress_struct info;
    struct jpeg_failure failure;
    info.err = jpeg_std_error(&failure.manager);
    failure.manager.error_exit = jpeg_fail;
    failure.manager.emit_message = jpeg_quiet;
    if (setjmp(failure.jump)) {
        snprintf(error, error_size, "not a readable JPEG (%s)", failure.message);
        jpeg_destroy_decompress(&info);
        free(picture->rgb);
        picture->rgb = NULL;
        return 1;
    }
    jpeg_create_decompress(&info);
    jpeg_stdio_src(&info, file);
    jpeg_save_markers(&info, JPEG_APP0 + 1, 0xFFFF);
    jpeg_read_header(&info, TRUE);
    picture->orientation = 1;
    for (jpeg_saved_marker_ptr marker = info.marker_list; marker; marker = marker->next) {
        if (marker->marker == JPEG_APP0 + 1) picture->orientation = exif_orientation(marker->data, marker->data_length);
    }
    info.out_color_space = JCS_RGB;  // greyscale and YCbCr alike, as Pillow's convert("RGB")
    jpeg_start_decompress(&info);
    picture->width = (int)info.output_width;
    picture->height = (int)info.output_height;
    size_t row = (size_t)info.output_width * 3;
    picture->rgb = malloc(row * info.output_height);
    if (!picture->rgb) {
        snprintf(error, error_size, "out of memory for a %dx%d picture", picture->width, picture->height);
        jpeg_destroy_decompress(&info);
        return 1;
    }
    while (info.output_scanline < info.output_height) {
        JSAMPROW line = picture->rgb + row * info.output_scanline;
        jpeg_read_scanlines(&info, &line, 1);
    }
    jpeg_finish_decompress(&info);
    jpeg_destroy_decompress(&info);
    return 0;
}

static int decode_png(FILE *file, pd_picture *picture, char *error, size_t error_size) {
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    png_bytep *rows = NULL;
    if (!info) {
        snprintf(error, error_size, "libpng could not start");
        png_destroy_read_struct(&png, NULL, NULL);
        return 1;
    }
    if (setjmp(png_jmpbuf(png))) {
        snprintf(error, error_size, "not a readable PNG");
        png_destroy_read_struct(&png, &info, NULL);
        free(rows);
        free(picture->rgb);
        picture->rgb = NULL;
        return 1;
    }
    png_init_io(png, file);
    png_read_info(png, info);
    png_uint_32 width = png_get_image_width(png, info), height = png_get_image_height(png, info);
    int type = png_get_color_type(png, info);
    png_set_expand(png);  // palette to RGB, grey below 8 bits to 8, tRNS to alpha
    png_set_scale_16(png);
    png_set_strip_alpha(png);
    if (type == PNG_COLOR_TYPE_GRAY || type == PNG_COLOR_TYPE_GRAY_ALPHA) png_set_gray_to_rgb(png);
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
    size_t row = (size_t)width * 3;
    picture->width = (int)width;
    picture->height = (int)height;
    picture->orientation = 1;
    picture->rgb = malloc(row * height);
    rows = malloc(sizeof(png_bytep) * height);
    if (!picture->rgb || !rows || png_get_rowbytes(png, info) != row) {
        snprintf(error, error_size, "cannot hold a %ux%u picture", (unsigned)width, (unsigned)height);
        png_destroy_read_struct(&png, &info, NULL);
        free(rows);
        free(picture->rgb);
        picture->rgb = NULL;
        return 1;
    }
    for (png_uint_32 y = 0; y < height; y++) rows[y] = picture->rgb + row * y;
    png_read_image(png, rows);
    png_read_end(png, NULL);
    png_destroy_read_struct(&png, &info, NULL);
    free(rows);
    return 0;
}

int pd_decode(const char *path, pd_picture *picture, char *error, size_t error_size) {
    memset(picture, 0, sizeof *picture);
    FILE *file = fopen(path, "rb");
    if (!file) {
        snprintf(error, error_size, "cannot open it");
        return 1;
    }
    uint8_t magic[8] = {0};
    size_t got = fread(magic, 1, sizeof magic, file);
    rewind(file);
    int status;
    if (got >= 3 && magic[0] == 0xFF && magic[1] == 0xD8 && magic[2] == 0xFF) {
        status = decode_jpeg(file, picture, error, error_size);
    } else if (got == 8 && png_sig_cmp(magic, 0, 8) == 0) {
        status = decode_png(file, picture, error, error_size);
    } else {
        snprintf(error, error_size, "not a JPEG or PNG picture");
        status = 1;
    }
    fclose(file);
    return status;
}

void pd_free(pd_picture *picture) {
    free(picture->rgb);
    picture->rgb = NULL;
}
