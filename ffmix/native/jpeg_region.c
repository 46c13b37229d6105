/* Decode only the part of a JPEG a crop box needs, through libjpeg(-turbo)'s libjpeg API.
 *
 * ffmix_decode_region decodes the JPEG at `src` at scale 1/denom (libjpeg's DCT scaling) into RGB, but only
 * the scanlines [top, bottom) and, through jpeg_crop_scanline, the columns around [left, right) (all in the
 * scaled image's pixels). libjpeg widens the columns to an iMCU boundary, so the window it really decoded is
 * reported back: window[0..5] = first row, first column, rows, columns, scaled height, scaled width. The
 * window's pixels are written to `out` as rows x columns x 3 bytes, contiguous. The box's pixels are those
 * of a full decode at the same scale (libffcv's imdecode: same IDCT, same upsampling), bit for bit; the
 * window's outermost columns, where they are not the image's edge, may differ (see below).
 *
 * Returns 0 when the window was decoded cleanly; FFMIX_REGION_FAILED (-1) when libjpeg reported an error OR
 * a warning (corrupt data, premature end: ffmix's rule, as for libffcv's imdecode: a recovered decode is not
 * the stored image); FFMIX_REGION_BAD_ARGS (-2) for a denominator other than 1, 2, 4, 8, an empty box, a box
 * outside the scaled image or a window larger than `capacity` bytes. Nothing is ever written past
 * out + capacity, and on failure `out` may hold a partial window (callers must not use it).
 *
 * Errors never exit(): the error manager longjmps back here. The rows after the box are not decoded
 * (jpeg_abort_decompress), so damage after them goes unseen; the caller checks the end-of-image marker.
 */
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <jpeglib.h>

#define FFMIX_REGION_FAILED (-1)
#define FFMIX_REGION_BAD_ARGS (-2)

struct region_error {
    struct jpeg_error_mgr manager;   /* first: libjpeg sees a struct jpeg_error_mgr* */
    jmp_buf escape;
};

static void stop_on_error(j_common_ptr cinfo) {
    longjmp(((struct region_error *)cinfo->err)->escape, 1);
}

/* msg_level -1 is a warning (corrupt data, premature end, extraneous bytes): a failure, as an error is.
 * Levels 0 and up are trace messages: ignored, and nothing is ever printed. */
static void stop_on_warning(j_common_ptr cinfo, int msg_level) {
    if (msg_level < 0)
        longjmp(((struct region_error *)cinfo->err)->escape, 1);
}

static void print_nothing(j_common_ptr cinfo) { (void)cinfo; }

/* The decode itself; `cinfo` is created by the caller, which destroys it whatever happens here. */
static int decode_window(struct jpeg_decompress_struct *cinfo, struct region_error *error, const uint8_t *src,
                         uint64_t size, int denom, int top, int left, int bottom, int right, uint8_t *out,
                         uint64_t capacity, int64_t *window) {
    if (setjmp(error->escape))
        return FFMIX_REGION_FAILED;
    jpeg_mem_src(cinfo, (unsigned char *)src, (unsigned long)size);
    if (jpeg_read_header(cinfo, TRUE) != JPEG_HEADER_OK)
        return FFMIX_REGION_FAILED;
    cinfo->out_color_space = JCS_RGB;       /* gray JPEGs too: three equal channels, as imdecode gives */
    cinfo->dct_method = JDCT_IFAST;          /* what libffcv's imdecode uses (TJFLAG_FASTDCT): same pixels */
    cinfo->scale_num = 1;
    cinfo->scale_denom = (unsigned int)denom;
    jpeg_start_decompress(cinfo);
    int height = (int)cinfo->output_height, width = (int)cinfo->output_width;
    window[4] = height;
    window[5] = width;
    if (cinfo->output_components != 3 || top < 0 || left < 0 || bottom > height || right > width)
        return FFMIX_REGION_BAD_ARGS;
    /* One column more on each side than the box: a cropped scanline's outer columns are upsampled from the
     * chroma as if they were the image's edge, so they can differ from a full decode (by a few levels,
     * with 4:2:0 or 4:2:2 chroma). Every column of the box is then inside and bit-identical to a full
     * decode's. jpeg_crop_scanline widens further, to iMCU boundaries, and tells where. */
    JDIMENSION col0 = (JDIMENSION)(left > 0 ? left - 1 : 0);
    JDIMENSION cols = (JDIMENSION)(right < width ? right + 1 : width) - col0;
    if (col0 != 0 || cols != (JDIMENSION)width)
        jpeg_crop_scanline(cinfo, &col0, &cols);
    uint64_t row_bytes = (uint64_t)cols * 3, rows = (uint64_t)(bottom - top);
    window[0] = top;
    window[1] = col0;
    window[2] = (int64_t)rows;
    window[3] = cols;
    if (col0 > (JDIMENSION)left || col0 + cols < (JDIMENSION)right || rows * row_bytes > capacity)
        return FFMIX_REGION_BAD_ARGS;
    if (top > 0 && jpeg_skip_scanlines(cinfo, (JDIMENSION)top) != (JDIMENSION)top)
        return FFMIX_REGION_FAILED;
    while (cinfo->output_scanline < (JDIMENSION)bottom) {
        JSAMPROW row = out + (uint64_t)(cinfo->output_scanline - (JDIMENSION)top) * row_bytes;
        if (jpeg_read_scanlines(cinfo, &row, 1) != 1)
            return FFMIX_REGION_FAILED;
    }
    jpeg_abort_decompress(cinfo);            /* the rows below the box are never decoded */
    return 0;
}

int ffmix_decode_region(const uint8_t *src, uint64_t size, int denom, int top, int left, int bottom, int right,
                        uint8_t *out, uint64_t capacity, int64_t *window) {
    memset(window, 0, 6 * sizeof(int64_t));
    if ((denom != 1 && denom != 2 && denom != 4 && denom != 8) || top >= bottom || left >= right || size == 0)
        return FFMIX_REGION_BAD_ARGS;
    struct jpeg_decompress_struct cinfo;
    struct region_error error;
    cinfo.err = jpeg_std_error(&error.manager);
    error.manager.error_exit = stop_on_error;
    error.manager.emit_message = stop_on_warning;
    error.manager.output_message = print_nothing;
    if (setjmp(error.escape))                /* jpeg_create_decompress itself can fail (out of memory) */
        return FFMIX_REGION_FAILED;
    jpeg_create_decompress(&cinfo);
    volatile int status = decode_window(&cinfo, &error, src, size, denom, top, left, bottom, right, out, capacity,
                                        window);
    if (setjmp(error.escape) == 0)           /* the escape must not point into decode_window's dead frame */
        jpeg_destroy_decompress(&cinfo);
    return status;
}

/* The version of this file's interface, checked by the loader (ffmix/native/__init__.py). */
int ffmix_region_version(void) { return 1; }
