// Pictures for the Linux command line: JPEG (libjpeg) and PNG (libpng) decoded to 8-bit RGB, as Pillow decodes
// them for the Python CLI (16-bit PNG samples scaled to 8 bits, alpha dropped, grey and palette expanded), with
// the JPEG's EXIF orientation reported so the caller shows the picture as displayed.
#ifndef EDGETAM_PICTURE_DECODING_H
#define EDGETAM_PICTURE_DECODING_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    int width;
    int height;
    /// width * height * 3 bytes, row after row; release with pd_free.
    uint8_t *rgb;
    /// EXIF orientation 1-8 (1 when the file has none).
    int orientation;
} pd_picture;

/// Decode a JPEG or PNG file (told apart by its first bytes); 0 on success, otherwise `error` says why.
int pd_decode(const char *path, pd_picture *picture, char *error, size_t error_size);
void pd_free(pd_picture *picture);

#ifdef __cplusplus
}
#endif

#endif
